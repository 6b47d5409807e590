//! The HTML report (`dqmon report`): one self-contained file, charts drawn
//! on the server as inline SVG.
//!
//! Owns turning the history (metrics via [`crate::query`], the alerts file)
//! and the approved baseline's bands into HTML: a summary table of alerts on
//! top, then for each monitored metric one small chart per trust tag over
//! batch time, with the baseline's normal band (mean ± k·σ of its
//! batch-to-batch variability) shaded and a red marker where an alert fired.
//!
//! It must not write anything but the HTML it returns, load nothing from the
//! network (no scripts, fonts or styles from elsewhere: the file opens
//! anywhere), or read the wall clock (the report of the same history is the
//! same bytes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimestampMicrosecondType};

use crate::alert::Alert;
use crate::compare::{Check, band_key};
use crate::config::model::Rules;
use crate::query::QueryError;

/// The report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("could not read the alerts at {path}: {reason}")]
    Alerts {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Metrics charted, in order: (metric in the history, check whose band and alerts go with it).
const CHARTED: &[(&str, Option<Check>)] = &[
    ("rows", Some(Check::RowCount)),
    ("tag_share", Some(Check::TagShare)),
    ("label_rate", Some(Check::LabelRate)),
    ("missing_rate", Some(Check::MissingRate)),
    ("mean", None),
];

/// Which charted metric an alert's check is drawn on.
fn metric_of(check: Check) -> Option<&'static str> {
    Some(match check {
        Check::RowCount => "rows",
        Check::TagShare => "tag_share",
        Check::LabelRate | Check::LabelRateVsTrusted | Check::LabelCalibration => "label_rate",
        Check::MissingRate => "missing_rate",
        Check::OutOfRange | Check::Distribution => "mean",
        _ => return None,
    })
}

/// One series: a metric of a column in a slice, by batch time (µs).
#[derive(Default)]
struct Series {
    points: Vec<(i64, f64)>,
}

type Key = (String, String, String); // metric, column, slice

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_val(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn date(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// An axis label: month, day and time (UTC).
fn short_date(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn parse_time(t: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t?)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// The alerts of the history: the alerts file, or in a shared history
/// the fleet's (every replica's batches' alerts, from their manifests).
fn read_alerts(rules: &Rules, state_dir: &Path) -> Result<Vec<Alert>, ReportError> {
    if crate::app::is_shared(rules, state_dir) {
        let unreadable =
            |path: std::path::PathBuf, e: &dyn std::fmt::Display| ReportError::Alerts {
                path,
                reason: e.to_string(),
            };
        let objects = crate::app::history_objects(rules, state_dir)
            .map_err(|e| unreadable(state_dir.to_path_buf(), &e))?;
        let manifests = crate::store::history::read_manifests_from(objects.as_ref())
            .map_err(|e| unreadable(objects.locate("history/batches"), &e))?;
        return Ok(manifests.into_iter().flat_map(|m| m.alerts).collect());
    }
    let path = state_dir.join("alerts.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ReportError::Alerts {
                path,
                reason: e.to_string(),
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn load_series(rules: &Rules, state_dir: &Path) -> Result<BTreeMap<Key, Series>, ReportError> {
    let names: Vec<String> = CHARTED.iter().map(|(m, _)| format!("'{m}'")).collect();
    let sql = format!(
        "SELECT batch_time, slice, \"column\", metric, value FROM metrics \
         WHERE batch_time IS NOT NULL AND metric IN ({}) \
         ORDER BY batch_time, batch_id",
        names.join(", ")
    );
    let batches = crate::query::query(rules, state_dir, &sql)?;
    let mut out: BTreeMap<Key, Series> = BTreeMap::new();
    let text = |a: &dyn Array| -> Vec<Option<String>> {
        let a = arrow::compute::cast(a, &DataType::Utf8).expect("strings cast to Utf8");
        let a = a.as_string::<i32>();
        (0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect()
    };
    for b in &batches {
        let t = arrow::compute::cast(
            b.column(0),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
        )
        .expect("batch_time casts");
        let t = t.as_primitive::<TimestampMicrosecondType>();
        let (slice, column, metric) = (text(b.column(1)), text(b.column(2)), text(b.column(3)));
        let value = b.column(4).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            let column = column[i].clone().unwrap_or_else(|| "-".into());
            let metric = metric[i].clone().unwrap_or_default();
            let numeric = rules
                .column(&column)
                .is_some_and(|c| c.kind == crate::config::model::ColumnKind::Numeric);
            if metric == "mean" && !numeric {
                // the mean of a timestamp says nothing a person can use
                continue;
            }
            if metric == "label_rate" {
                let positive = rules.label.as_ref().and_then(|l| l.positive.as_deref());
                let want =
                    positive.map(|p| format!("{}={p}", rules.label.as_ref().unwrap().column));
                if want.as_deref().is_some_and(|w| w != column) {
                    continue;
                }
            }
            out.entry((metric, column, slice[i].clone().unwrap_or_default()))
                .or_default()
                .points
                .push((t.value(i), value.value(i)));
        }
    }
    Ok(out)
}

/// Build the report of a dataset's history (`state_dir`) as HTML.
pub fn build(rules: &Rules, state_dir: &Path) -> Result<String, ReportError> {
    let series = load_series(rules, state_dir)?;
    let alerts = read_alerts(rules, state_dir)?;
    let baseline = crate::app::baseline_store(rules)
        .and_then(|store| store.approved(&rules.dataset, rules.baseline_id.as_deref()))
        .ok();
    // the chart shades the baseline mean ± 4σ of its batches: a picture of
    // normal variability, not the decision rule (that is the false-alarm budget)
    let k = 4.0;

    let (t0, t1) = series
        .values()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));

    let mut h = String::new();
    let title = format!("dqmon report: {}", rules.dataset);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    let batches = series
        .get(&("rows".into(), "-".into(), "all".into()))
        .map_or(0, |s| s.points.len());
    let _ = writeln!(
        h,
        "<p class=\"meta\">{batches} batches with an event time{}; {} alerts; baseline {}.</p>",
        if t0 <= t1 {
            format!(" from {} to {} (UTC)", date(t0), date(t1))
        } else {
            String::new()
        },
        alerts.len(),
        baseline
            .as_ref()
            .map(|(id, _, a)| format!(
                "<code>{}</code> approved by {}",
                esc(&id[..12.min(id.len())]),
                esc(&a.approved_by)
            ))
            .unwrap_or_else(|| "none approved (no normal band drawn)".into())
    );

    // summary table of alerts
    h.push_str("<h2>Alerts</h2>\n");
    if alerts.is_empty() {
        h.push_str("<p>No alerts.</p>\n");
    } else {
        h.push_str(
            "<table id=\"alerts\"><thead><tr><th>batch time</th><th>severity</th><th>verdict</th>\
             <th>check</th><th>column</th><th>trust tag</th><th>baseline → observed</th>\
             <th>batch</th><th>what happened</th></tr></thead><tbody>\n",
        );
        for a in &alerts {
            let _ = writeln!(
                h,
                "<tr class=\"{sev}\"><td>{time}</td><td>{sev}</td><td>{verdict}</td><td>{check}</td>\
                 <td>{col}</td><td>{tag}</td><td>{b} → {o}</td><td><code>{batch}</code></td><td>{msg}</td></tr>",
                time = esc(a.batch_time.as_deref().unwrap_or("-")),
                sev = a.severity.as_str(),
                verdict = a.verdict.as_str(),
                check = a.check.as_str(),
                col = esc(a.column.as_deref().unwrap_or("-")),
                tag = esc(&a.trust_tag),
                b = fmt_val(a.baseline_value),
                o = fmt_val(a.observed_value),
                batch = esc(&a.batch_id[..12.min(a.batch_id.len())]),
                msg = esc(&a.message),
            );
        }
        h.push_str("</tbody></table>\n");
    }

    // charts: one section per metric and column, one chart per slice
    let slice_order = |s: &str| (s != "all", rules.trust.rank(s), s.to_string());
    let mut groups: BTreeMap<(usize, String), Vec<&Key>> = BTreeMap::new();
    for key in series.keys() {
        let rank = CHARTED.iter().position(|(m, _)| *m == key.0).unwrap_or(99);
        if key.0 == "tag_share" && key.2 == "all" {
            continue;
        }
        groups.entry((rank, key.1.clone())).or_default().push(key);
    }
    h.push_str("<h2>Metrics over time</h2>\n<p class=\"meta\">Shaded: the baseline's normal band (mean ± k·σ of its batch-to-batch variability). Red: an alert fired on that batch.</p>\n");
    for ((rank, column), mut keys) in groups {
        let (metric, check) = CHARTED[rank.min(CHARTED.len() - 1)];
        keys.sort_by_key(|k| slice_order(&k.2));
        let heading = if column == "-" {
            metric.to_string()
        } else {
            format!("{metric} of {column}")
        };
        let _ = writeln!(
            h,
            "<section class=\"metric\"><h3>{}</h3><div class=\"charts\">",
            esc(&heading)
        );
        for key in keys {
            let band = check.zip(baseline.as_ref()).and_then(|(c, (_, b, _))| {
                let col = match c {
                    Check::LabelRate => rules.label.as_ref().map(|l| l.column.clone()),
                    _ if column == "-" => None,
                    _ => Some(column.clone()),
                };
                b.bands
                    .get(&band_key(c, col.as_deref(), &key.2))
                    .filter(|b| b.n > 0)
                    // every charted metric is a count or a share: never below 0
                    .map(|b| ((b.mean - k * b.std()).max(0.0), b.mean + k * b.std()))
            });
            let fired: Vec<i64> = alerts
                .iter()
                .filter(|a| metric_of(a.check) == Some(metric) && a.trust_tag == key.2)
                .filter(|a| match a.column.as_deref() {
                    None => column == "-",
                    Some(c) => column == c || column.starts_with(&format!("{c}=")),
                })
                .filter_map(|a| parse_time(a.batch_time.as_deref()))
                .collect();
            chart(&mut h, &key.2, &series[key], band, &fired, (t0, t1));
        }
        h.push_str("</div></section>\n");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

const W: f64 = 300.0;
const H: f64 = 130.0;
const PAD_L: f64 = 46.0;
const PAD_R: f64 = 8.0;
const PAD_T: f64 = 18.0;
const PAD_B: f64 = 18.0;

/// One small chart as inline SVG.
fn chart(
    h: &mut String,
    slice: &str,
    s: &Series,
    band: Option<(f64, f64)>,
    fired: &[i64],
    (t0, t1): (i64, i64),
) {
    let mut lo = s.points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut hi = s
        .points
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    if let Some((a, b)) = band {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return;
    }
    if hi - lo < 1e-12 {
        lo -= 0.5_f64.max(lo.abs() * 0.1);
        hi += 0.5_f64.max(hi.abs() * 0.1);
    }
    let span = (t1 - t0).max(1) as f64;
    let x = |t: i64| PAD_L + (t - t0) as f64 / span * (W - PAD_L - PAD_R);
    let y = |v: f64| PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B);
    let _ = write!(
        h,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{s}\"><title>{s}</title>\
         <text x=\"{PAD_L}\" y=\"12\" class=\"t\">{s}</text>",
        s = esc(slice)
    );
    if let Some((a, b)) = band {
        let (ya, yb) = (y(a.max(lo)), y(b.min(hi)));
        let _ = write!(
            h,
            "<rect class=\"band\" x=\"{PAD_L}\" y=\"{yb:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
            W - PAD_L - PAD_R,
            (ya - yb).max(0.5)
        );
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"{PAD_L}\" y1=\"{PAD_T}\" x2=\"{PAD_L}\" y2=\"{yb}\"/>\
         <line class=\"axis\" x1=\"{PAD_L}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\"/>\
         <text x=\"{tx}\" y=\"{ty_hi:.1}\" class=\"l\">{hi_s}</text>\
         <text x=\"{tx}\" y=\"{ty_lo:.1}\" class=\"l\">{lo_s}</text>\
         <text x=\"{PAD_L}\" y=\"{H}\" class=\"d\" dy=\"-4\">{d0}</text>\
         <text x=\"{xr}\" y=\"{H}\" class=\"d e\" dy=\"-4\">{d1}</text>",
        yb = H - PAD_B,
        xr = W - PAD_R,
        tx = PAD_L - 3.0,
        ty_hi = PAD_T + 4.0,
        ty_lo = H - PAD_B,
        hi_s = fmt_val(hi),
        lo_s = fmt_val(lo),
        d0 = esc(&short_date(t0)),
        d1 = esc(&short_date(t1)),
    );
    for t in fired {
        let _ = write!(
            h,
            "<line class=\"alert\" x1=\"{x:.1}\" y1=\"{PAD_T}\" x2=\"{x:.1}\" y2=\"{yb}\"/>",
            x = x(*t),
            yb = H - PAD_B
        );
    }
    let pts: Vec<String> = s
        .points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let _ = write!(h, "<polyline class=\"line\" points=\"{}\"/>", pts.join(" "));
    for &(t, v) in &s.points {
        let hit = fired.contains(&t);
        let _ = write!(
            h,
            "<circle class=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>{}: {}</title></circle>",
            if hit { "pt hit" } else { "pt" },
            x(t),
            y(v),
            if hit { 4 } else { 2 },
            esc(&date(t)),
            fmt_val(v)
        );
    }
    h.push_str("</svg>");
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px;margin:18px 0 6px}\
.meta{color:#555}table{border-collapse:collapse;font-size:13px;width:100%;table-layout:auto}\
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
td:last-child{overflow-wrap:anywhere}\
th{background:#f3f3f3}tr.critical td:nth-child(2){color:#b00020;font-weight:600}\
tr.warning td:nth-child(2){color:#9a6700}code{font-size:12px}\
.charts{display:flex;flex-wrap:wrap;gap:8px}\
svg.chart{border:1px solid #e3e3e3;background:#fff}\
.band{fill:#2e7d32;fill-opacity:.15}.axis{stroke:#999;stroke-width:1}\
.line{fill:none;stroke:#1565c0;stroke-width:1.5}.pt{fill:#1565c0}.pt.hit{fill:#d50000}\
.alert{stroke:#d50000;stroke-width:1;stroke-dasharray:3 2}\
.t{font-size:12px;font-weight:600}.l{font-size:10px;text-anchor:end;fill:#555}\
.d{font-size:10px;fill:#555}.d.e{text-anchor:end}";
