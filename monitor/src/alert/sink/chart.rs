//! The small chart in alert emails: the alert's metric over the dataset's
//! recent batches (from the history's metrics files) with the baseline's
//! normal band shaded, as a PNG.
//!
//! Reads history metrics only; writes nothing. Draws with plotters into an
//! RGB buffer (no fonts, no system libraries) and encodes it with `png`.

use arrow::array::{Array, Float64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use plotters::prelude::*;

use crate::alert::Alert;
use crate::compare::Check;
use crate::store::backend::Backend;

pub const WIDTH: u32 = 480;
pub const HEIGHT: u32 = 160;

/// The metric (name, column) of the history metrics that a check watches.
fn metric_of(a: &Alert) -> Option<(&'static str, Option<String>)> {
    match a.check {
        Check::RowCount => Some(("rows", None)),
        Check::TagShare => Some(("tag_share", None)),
        Check::MissingRate => Some(("missing_rate", a.column.clone())),
        Check::DuplicateRows => Some(("duplicate_share", None)),
        Check::LabelRate | Check::LabelRateVsTrusted | Check::LabelCalibration => {
            Some(("label_rate", a.value.as_ref().map(|v| format!("label={v}"))))
        }
        _ => None,
    }
}

/// Rows (column, value) of one metric and slice in one batch's metrics file.
fn rows_in(
    history: &dyn Backend,
    batch_id: &str,
    slice: &str,
    metric: &str,
) -> Vec<(Option<String>, f64)> {
    let key = format!("history/metrics/{batch_id}.parquet");
    let Ok(Some(bytes)) = history.get(&key) else {
        return Vec::new();
    };
    let Some(reader) = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .ok()
        .and_then(|b| b.build().ok())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for batch in reader.flatten() {
        let strings = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        };
        let (Some(slices), Some(columns), Some(metrics)) =
            (strings("slice"), strings("column"), strings("metric"))
        else {
            continue;
        };
        let Some(values) = batch
            .column_by_name("value")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
        else {
            continue;
        };
        for i in 0..batch.num_rows() {
            if slices.value(i) == slice && metrics.value(i) == metric {
                let col = (!columns.is_null(i)).then(|| columns.value(i).to_string());
                out.push((col, values.value(i)));
            }
        }
    }
    out
}

/// The metrics column that holds the alert's metric: the named one, or for
/// a label rate without a class, the class whose rate in the alert's batch
/// is the observed value.
fn column_of(
    history: &dyn Backend,
    a: &Alert,
    metric: &str,
    column: Option<String>,
) -> Option<String> {
    if column.is_some() || metric != "label_rate" {
        return column;
    }
    rows_in(history, &a.batch_id, &a.trust_tag, metric)
        .into_iter()
        .filter_map(|(c, v)| c.map(|c| (c, (v - a.observed_value).abs())))
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(c, _)| c)
}

/// The series (oldest first) of the alert's metric over `recent` batches;
/// the alert's own observed value stands in where no metrics file is found.
pub fn series(history: &dyn Backend, recent: &[String], a: &Alert) -> Vec<f64> {
    let mut out = Vec::new();
    if let Some((metric, column)) = metric_of(a) {
        let column = column_of(history, a, metric, column);
        for b in recent {
            let v = rows_in(history, b, &a.trust_tag, metric)
                .into_iter()
                .find(|(c, _)| *c == column)
                .map(|(_, v)| v);
            match v {
                Some(v) => out.push(v),
                None if *b == a.batch_id => out.push(a.observed_value),
                None => {}
            }
        }
    }
    if out.is_empty() {
        out.push(a.observed_value);
    }
    out
}

/// The baseline's normal band for the alert's metric.
pub fn band(a: &Alert) -> (f64, f64) {
    let b = a.baseline_value;
    let t = a.threshold.abs();
    match a.check {
        Check::RowCount => (b * (1.0 - t).max(0.0), b * (1.0 + t)),
        _ => ((b - t).max(0.0), b + t),
    }
}

/// A PNG of `values` (dots joined by a line) over the shaded band `(lo, hi)`.
pub fn png(values: &[f64], band: (f64, f64)) -> Result<Vec<u8>, String> {
    let (w, h) = (WIDTH, HEIGHT);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let finite = values.iter().copied().filter(|v| v.is_finite());
        let lo = finite.clone().fold(band.0, f64::min);
        let hi = finite.fold(band.1, f64::max);
        let pad = ((hi - lo).abs() * 0.1).max(1e-9);
        let n = values.len().max(2) as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .build_cartesian_2d(-0.5..(n - 0.5), (lo - pad)..(hi + pad))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(-0.5, band.0), (n - 0.5, band.1)],
                RGBColor(200, 225, 200).filled(),
            )))
            .map_err(|e| e.to_string())?;
        let pts: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| (i as f64, *v))
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts.clone(),
                RGBColor(60, 90, 160).stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        let last = pts.len().saturating_sub(1);
        chart
            .draw_series(pts.iter().enumerate().map(|(i, p)| {
                let color = if i == last {
                    RGBColor(200, 30, 30)
                } else {
                    RGBColor(60, 90, 160)
                };
                Circle::new(*p, if i == last { 5 } else { 3 }, color.filled())
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(&rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_a_png_with_the_band_and_the_last_point() {
        let bytes = png(&[0.03, 0.031, 0.029, 0.22], (0.01, 0.05)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let dec = png::Decoder::new(std::io::Cursor::new(&bytes));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let px = |rgb: (u8, u8, u8)| buf.chunks(3).filter(|c| (c[0], c[1], c[2]) == rgb).count();
        assert!(px((200, 225, 200)) > 1000, "band drawn");
        assert!(px((200, 30, 30)) > 10, "latest point drawn in red");
    }
}
