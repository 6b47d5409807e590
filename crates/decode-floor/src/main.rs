//! `dqmon-decode-floor FILE [--threads N] [--dictionary COLUMN,...]`: decode
//! every column of a Parquet file into Arrow record batches of 8,192 rows
//! (the size `dqmon` reads) with the parquet crate, and nothing else; print
//! `{"rows": N, "seconds": S}`. It is the physical floor `dqmon profile` is
//! timed against (`monitor/benches/decode_ratio.py`, issue 17): with
//! `--threads N` the row groups are split over N threads, as `dqmon` splits
//! them; with `--dictionary` the named string columns are read as Arrow
//! dictionaries, as `dqmon` reads category-like columns.

use std::fs::File;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

const BATCH_ROWS: usize = 8_192;

struct Args {
    file: String,
    threads: usize,
    dictionary: Vec<String>,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut file = None;
    let mut threads = 1;
    let mut dictionary = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n >= 1)
                    .ok_or("--threads takes a number of threads, 1 or more")?;
            }
            "--dictionary" => {
                dictionary = it
                    .next()
                    .ok_or("--dictionary takes column names, comma-separated")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
            }
            _ if file.is_none() && !a.starts_with('-') => file = Some(a),
            _ => return Err(format!("unexpected argument `{a}`")),
        }
    }
    Ok(Args {
        file: file
            .ok_or("usage: dqmon-decode-floor FILE [--threads N] [--dictionary COLUMN,...]")?,
        threads,
        dictionary,
    })
}

/// Decode the row groups `groups` of the file; the rows read.
fn decode(args: &Args, groups: Vec<usize>) -> Result<usize, String> {
    let file = File::open(&args.file).map_err(|e| format!("{}: {e}", args.file))?;
    let meta =
        ParquetRecordBatchReaderBuilder::try_new(file.try_clone().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let schema = meta.schema().clone();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let utf8 = matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8);
            if utf8 && args.dictionary.iter().any(|d| d == f.name()) {
                f.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                ))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|e| e.to_string())?
        .with_row_groups(groups)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for batch in reader {
        rows += std::hint::black_box(batch.map_err(|e| e.to_string())?).num_rows();
    }
    Ok(rows)
}

fn run() -> Result<(usize, f64), String> {
    let args = args()?;
    let started = Instant::now();
    let file = File::open(&args.file).map_err(|e| format!("{}: {e}", args.file))?;
    let groups = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?
        .metadata()
        .num_row_groups();
    // row groups dealt round-robin, one share per thread
    let shares: Vec<Vec<usize>> = (0..args.threads)
        .map(|t| (t..groups).step_by(args.threads).collect())
        .collect();
    let rows = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let args = &args;
                s.spawn(move || decode(args, share))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a decode thread does not panic"))
            .sum::<Result<usize, String>>()
    })?;
    Ok((rows, started.elapsed().as_secs_f64()))
}

fn main() -> ExitCode {
    match run() {
        Ok((rows, seconds)) => {
            println!("{{\"rows\": {rows}, \"seconds\": {seconds:.6}}}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dqmon-decode-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
