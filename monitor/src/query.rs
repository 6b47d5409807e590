//! SQL over a dataset's history with DataFusion (`dqmon query`).
//!
//! Owns turning the stored history into SQL tables and running one query:
//!
//! | table | from | one row per |
//! |---|---|---|
//! | `metrics` | `history/metrics/*.parquet` (a listing table, read as it lies) | batch × slice × column × metric |
//! | `batches` | `history/batches/*.json` (manifests) | batch |
//! | `findings` | the manifests' findings | finding |
//! | `alerts` | `alerts.jsonl` | alert |
//! | `baselines` | the baseline folder and its approvals | stored baseline |
//!
//! With a `shared_history`, the tables hold the fleet's history: every
//! replica's batches, metrics and alerts, read from the object store
//! (manifests and metrics from their packs where a pack holds them: see
//! `store::history::packs`).
//!
//! It must not write anything: the history is opened read-only (no repair),
//! and a query is a plain DataFusion `SELECT`. It runs on the caller's
//! thread with a single-threaded runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::{Value, json};

use crate::config::model::Rules;
use crate::store::backend::Backend;
use crate::store::history::{self, HistoryError, Manifest};

/// A query could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("could not read the history at {path}: {reason}")]
    History { path: PathBuf, reason: String },
    #[error("{0}")]
    Sql(String),
    #[error("could not build the `{table}` table: {reason}")]
    Table { table: &'static str, reason: String },
    #[error("could not write the result: {0}")]
    Output(String),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Csv,
    /// JSON lines: one object per row.
    Json,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn f64_(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

fn u64_(name: &str) -> Field {
    Field::new(name, DataType::UInt64, true)
}

/// The schema of `history/metrics/*.parquet` (see `store::history`).
pub fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("batch_id", DataType::Utf8, false),
        Field::new("batch_time", ts(), true),
        Field::new("slice", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn batches_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        u64_("seq"),
        utf8("batch_id"),
        utf8("dataset"),
        utf8("status"),
        utf8("source"),
        utf8("input_sha256"),
        u64_("input_bytes"),
        u64_("rows"),
        utf8("rows_by_tag"),
        utf8("schema_fingerprint"),
        utf8("baseline_id"),
        utf8("rules_hash"),
        utf8("dqmon_version"),
        Field::new("batch_time", ts(), true),
        utf8("reason"),
        u64_("findings"),
        u64_("alerts"),
    ]))
}

fn findings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("batch_id"),
        Field::new("batch_time", ts(), true),
        utf8("baseline_id"),
        utf8("check"),
        utf8("column"),
        utf8("trust_tag"),
        utf8("value"),
        f64_("baseline_value"),
        f64_("observed_value"),
        utf8("statistic_name"),
        f64_("statistic"),
        f64_("threshold"),
        f64_("p_value"),
        f64_("effect_size"),
        utf8("moved_tags"),
        utf8("attribution"),
        utf8("verdict"),
        utf8("severity"),
        utf8("message"),
    ]))
}

fn alerts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("alert_id"),
        utf8("fingerprint"),
        utf8("dataset"),
        utf8("batch_id"),
        utf8("source"),
        utf8("input_sha256"),
        Field::new("batch_time", ts(), true),
        utf8("check"),
        utf8("column"),
        utf8("trust_tag"),
        utf8("value"),
        utf8("baseline_id"),
        f64_("baseline_value"),
        f64_("observed_value"),
        utf8("statistic_name"),
        f64_("statistic"),
        f64_("threshold"),
        f64_("p_value"),
        f64_("effect_size"),
        utf8("attribution"),
        utf8("severity"),
        utf8("verdict"),
        utf8("message"),
        utf8("rules_hash"),
        utf8("dqmon_version"),
    ]))
}

fn baselines_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("baseline_id"),
        utf8("dataset"),
        Field::new("verified", DataType::Boolean, false),
        utf8("built_by"),
        u64_("batches"),
        u64_("rows"),
        utf8("rules_hash"),
        Field::new("approved", DataType::Boolean, false),
        utf8("approved_by"),
        Field::new("approved_at", ts(), true),
        utf8("note"),
    ]))
}

/// Nested values (objects, lists) become their JSON text.
fn flatten(mut v: Value, keys: &[&str]) -> Value {
    for k in keys {
        if let Some(x) = v.get_mut(*k)
            && (x.is_object() || x.is_array())
        {
            *x = Value::String(x.to_string());
        }
    }
    v
}

fn to_batch(
    table: &'static str,
    schema: &SchemaRef,
    rows: &[Value],
) -> Result<RecordBatch, QueryError> {
    let err = |e: arrow::error::ArrowError| QueryError::Table {
        table,
        reason: e.to_string(),
    };
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(err)?;
    decoder.serialize(rows).map_err(err)?;
    Ok(decoder
        .flush()
        .map_err(err)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

fn mem(
    ctx: &SessionContext,
    table: &'static str,
    schema: SchemaRef,
    rows: &[Value],
) -> Result<(), QueryError> {
    let batch = to_batch(table, &schema, rows)?;
    let t = MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| QueryError::Table {
        table,
        reason: e.to_string(),
    })?;
    ctx.register_table(table, Arc::new(t))
        .map_err(|e| QueryError::Table {
            table,
            reason: e.to_string(),
        })?;
    Ok(())
}

/// The history's manifests, read the way the store reads them (through its
/// backend, without opening the history: nothing is locked or repaired).
fn read_manifests(objects: &dyn Backend) -> Result<Vec<Manifest>, QueryError> {
    history::read_manifests_from(objects).map_err(history_error(objects, ""))
}

/// A failure reading the history, as the query reports it: where, and why
/// (`at`, a key, for a failure that names no object).
fn history_error<'a>(
    objects: &'a dyn Backend,
    at: &'a str,
) -> impl FnOnce(HistoryError) -> QueryError + 'a {
    move |e| match e {
        HistoryError::Io { path, source } => QueryError::History {
            path,
            reason: source.to_string(),
        },
        HistoryError::Corrupt { path, reason } => QueryError::History { path, reason },
        other => QueryError::History {
            path: objects.locate(at),
            reason: other.to_string(),
        },
    }
}

/// Every batch's metrics of a shared history, read through its backend
/// (DataFusion 55's object store clients are the version this workspace
/// keeps out; see `store::object`): from the metric packs, and one request
/// per batch not packed yet (see `store::history::metric_packs`).
fn shared_metrics(
    objects: &dyn Backend,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, QueryError> {
    let rows = history::read_metrics(objects).map_err(history_error(objects, "history/metrics"))?;
    rows.into_iter()
        .map(|b| {
            RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(|e| {
                QueryError::History {
                    path: objects.locate("history/metrics"),
                    reason: e.to_string(),
                }
            })
        })
        .collect()
}

/// The alerts of every batch of the manifests (a shared history's: the
/// fleet's alerts, where each replica's `alerts.jsonl` holds its own).
fn manifest_alerts(manifests: &[Manifest]) -> Vec<Value> {
    manifests
        .iter()
        .flat_map(|m| &m.alerts)
        .map(|a| {
            flatten(
                serde_json::to_value(a).expect("alerts serialize"),
                &["attribution"],
            )
        })
        .collect()
}

fn read_alerts(state_dir: &Path) -> Result<Vec<Value>, QueryError> {
    let path = state_dir.join("alerts.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(QueryError::History {
                path,
                reason: e.to_string(),
            });
        }
    };
    // a torn last line (a crash mid-append) is left out, as the daemon would cut it
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| flatten(v, &["attribution"]))
        .collect())
}

/// A session with the history of `rules`' dataset (in `state_dir`, the
/// live one unless a replay's is given) registered as tables.
pub async fn session(rules: &Rules, state_dir: &Path) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    let shared = crate::app::is_shared(rules, state_dir);
    let objects =
        crate::app::history_objects(rules, state_dir).map_err(|e| QueryError::History {
            path: state_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
    let metrics = state_dir.join("history/metrics");
    let schema = metrics_schema();
    if shared {
        let batches = shared_metrics(objects.as_ref(), &schema)?;
        let t = MemTable::try_new(schema, vec![batches]).map_err(|e| QueryError::Table {
            table: "metrics",
            reason: e.to_string(),
        })?;
        ctx.register_table("metrics", Arc::new(t))
            .map_err(|e| QueryError::Table {
                table: "metrics",
                reason: e.to_string(),
            })?;
    } else if metrics.is_dir() {
        let opts = ParquetReadOptions::default().schema(&schema);
        ctx.register_parquet("metrics", format!("{}/", metrics.display()), opts)
            .await
            .map_err(|e| QueryError::Table {
                table: "metrics",
                reason: e.to_string(),
            })?;
    } else {
        // no history yet: an empty table, and nothing is created
        mem(&ctx, "metrics", schema, &[])?;
    }

    let manifests = read_manifests(objects.as_ref())?;
    let alerts = if shared {
        manifest_alerts(&manifests)
    } else {
        read_alerts(state_dir)?
    };
    let mut batches = Vec::new();
    let mut findings = Vec::new();
    for m in &manifests {
        let mut v = serde_json::to_value(m).expect("manifests serialize");
        v["findings"] = json!(m.findings.len());
        v["alerts"] = json!(m.alerts.len());
        batches.push(flatten(v, &["rows_by_tag"]));
        for f in &m.findings {
            let mut v = serde_json::to_value(f).expect("findings serialize");
            v["batch_id"] = json!(m.batch_id);
            v["batch_time"] = json!(m.batch_time);
            v["baseline_id"] = json!(m.baseline_id);
            findings.push(flatten(v, &["moved_tags", "attribution"]));
        }
    }
    drop(manifests);
    mem(&ctx, "batches", batches_schema(), &batches)?;
    mem(&ctx, "findings", findings_schema(), &findings)?;
    mem(&ctx, "alerts", alerts_schema(), &alerts)?;

    let err = |e: crate::store::baselines::BaselineStoreError| QueryError::Table {
        table: "baselines",
        reason: e.to_string(),
    };
    // an absent folder or prefix has none
    let store = crate::app::baseline_store(rules).map_err(err)?;
    let mut rows = Vec::new();
    let approvals = store.approvals().map_err(err)?;
    for v in store.verify_all().map_err(err)? {
        let a = approvals.iter().rev().find(|a| a.baseline_id == v.id);
        let b = if v.mismatch.is_none() {
            store.load(&v.id).ok()
        } else {
            None
        };
        rows.push(json!({
            "baseline_id": v.id,
            "dataset": b.as_ref().map(|b| b.dataset.clone()),
            "verified": v.mismatch.is_none(),
            "built_by": b.as_ref().map(|b| b.built_by.clone()),
            "batches": b.as_ref().map(|b| b.batches.len()),
            "rows": b.as_ref().map(|b| b.profile.rows),
            "rules_hash": b.as_ref().map(|b| b.rules_hash.clone()),
            "approved": a.is_some(),
            "approved_by": a.map(|a| a.approved_by.clone()),
            "approved_at": a.map(|a| a.approved_at.clone()),
            "note": a.map(|a| a.note.clone()),
        }));
    }
    mem(&ctx, "baselines", baselines_schema(), &rows)?;
    Ok(ctx)
}

/// Run one SQL statement over the history; returns the result batches.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let df = ctx.sql(sql).await.map_err(|e| {
        QueryError::Sql(format!(
            "{e}; the tables are metrics, batches, findings, alerts and baselines (see `dqmon query --help`)"
        ))
    })?;
    df.collect()
        .await
        .map_err(|e| QueryError::Sql(e.to_string()))
}

/// Write result batches in a format.
pub fn write(
    out: &mut impl std::io::Write,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<(), QueryError> {
    let err = |e: &dyn std::fmt::Display| QueryError::Output(e.to_string());
    match format {
        OutputFormat::Table => {
            let t = arrow::util::pretty::pretty_format_batches(batches).map_err(|e| err(&e))?;
            writeln!(out, "{t}").map_err(|e| err(&e))
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for b in batches {
                w.write(b).map_err(|e| err(&e))?;
            }
            Ok(())
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b).map_err(|e| err(&e))?;
            }
            w.finish().map_err(|e| err(&e))
        }
    }
}

/// Run a query with a single-threaded runtime (for the CLI and tests).
pub fn query(rules: &Rules, state_dir: &Path, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| QueryError::Sql(format!("could not start the query runtime: {e}")))?;
    rt.block_on(async {
        let ctx = session(rules, state_dir).await?;
        run_sql(&ctx, sql).await
    })
}
