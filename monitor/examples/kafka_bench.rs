//! Helper for `monitor/benches/kafka_throughput.sh`: fills a topic with JSON
//! records, prepares a dqmon rules folder with an approved baseline for
//! them, and is the reference it is timed against (a bare rdkafka consumer
//! that only counts messages and bytes).
//!
//! ```text
//! kafka_bench produce --brokers B --topic T --records N --partitions P
//! kafka_bench setup   --brokers B --topic T --dir D
//! kafka_bench count   --brokers B --topic T --records N
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dqmon::config::model::MessageFormat;
use dqmon::decode::json::{JsonDecoder, Message as JsonMessage};
use dqmon_fixtures::{BatchSpec, Scenario};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Rows generated per fixture batch (one produce round per batch).
const CHUNK: usize = 20_000;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write N JSON records (clean fixture rows), spread over P partitions.
    Produce {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        records: usize,
        #[arg(long)]
        partitions: i32,
    },
    /// Write rules.yaml and an approved baseline for the records into DIR.
    Setup {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Read the topic from the beginning as a fresh consumer group until N
    /// messages were seen; print messages, bytes and seconds.
    Count {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        records: usize,
    },
}

const RULES: &str = "\
dataset: events
trust:
  column: trust_tag
  levels: [human_reviewed, vendor, user_reported, scraped]
  low_trust: [user_reported, scraped]
label:
  column: label
  positive: \"1\"
columns:
  event_time: timestamp
  amount: { kind: numeric, range: [0, 1000000] }
  age: { kind: numeric, range: [0, 120] }
  country: categorical
  device: categorical
  merchant_category: categorical
state_dir: state
baseline_dir: baselines
";

fn json_rows(index: u64, rows: usize) -> Result<Vec<Vec<u8>>> {
    let batch = dqmon_fixtures::generate(&BatchSpec {
        rows,
        seed: 7,
        batch_index: index,
        scenario: Scenario::Clean,
    });
    let mut buf = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
    w.write(&batch)?;
    w.finish()?;
    Ok(buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn produce(brokers: &str, topic: &str, records: usize, partitions: i32) -> Result<()> {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .context("creating the producer")?;
    let mut sent = 0usize;
    let mut index = 0u64;
    while sent < records {
        let rows = json_rows(index, CHUNK.min(records - sent))?;
        for (i, payload) in rows.iter().enumerate() {
            let partition = ((sent + i) % partitions as usize) as i32;
            let mut rec = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(payload.as_slice());
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        sent += rows.len();
        index += 1;
    }
    p.flush(Duration::from_secs(300))
        .context("flushing the producer")?;
    eprintln!("produced {sent} records to {topic}");
    Ok(())
}

fn setup(brokers: &str, topic: &str, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "{RULES}source:\n  kafka:\n    brokers: [\"{brokers}\"]\n    topics: [{topic}]\n    group_id: dqmon-bench\n    format: json\n    window: {{ max_records: 50000, max_ms: 5000 }}\n"
        ),
    )?;
    let cfg = dqmon::config::load(&rules)?;
    let r = cfg.datasets.into_iter().next().context("no dataset")?;
    let pii = dqmon::pii::load_existing(&r.pii_key_env, &r.state_dir)?
        .map_or_else(dqmon::pii::unstored, Ok)?;
    let decoder = JsonDecoder::new(&r, MessageFormat::Json, false);
    let mut profiles = Vec::new();
    let mut refs = Vec::new();
    for i in 0..8 {
        let rows = json_rows(i, 50_000)?;
        let msgs: Vec<JsonMessage<'_>> = rows
            .iter()
            .map(|p| JsonMessage {
                payload: p,
                tag: None,
            })
            .collect();
        let d = decoder.decode(&msgs);
        if let Some(r) = d.rejected.first() {
            bail!("fixture row rejected: {r:?}");
        }
        profiles.push(dqmon::profile::profile_batches(&r, &pii, &d.batches)?);
        refs.push(dqmon::baseline::BatchRef {
            origin: format!("bench clean {i}"),
            input_sha256: None,
            rows: d.rows,
        });
    }
    let b = dqmon::baseline::Baseline::build(&r, &profiles, refs, "bench")?;
    let store = dqmon::store::baselines::BaselineStore::new(&r.baseline_dir);
    let id = store.save(&b)?;
    store.approve(&id, "bench-approver", "2026-01-01T00:00:00Z", "benchmark")?;
    eprintln!("rules and approved baseline {id} in {}", dir.display());
    Ok(())
}

fn count(brokers: &str, topic: &str, records: usize) -> Result<()> {
    let start = Instant::now();
    let group = format!("bare-count-{}", std::process::id());
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the consumer")?;
    c.subscribe(&[topic])?;
    let (mut messages, mut bytes) = (0usize, 0usize);
    while messages < records {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                messages += 1;
                bytes += m.payload_len();
            }
            Some(Err(e)) => bail!("consumer error: {e}"),
            None if start.elapsed() > Duration::from_secs(1800) => {
                bail!("gave up after {messages} of {records} messages")
            }
            None => {}
        }
    }
    println!(
        "messages={messages} bytes={bytes} seconds={:.3}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Produce {
            brokers,
            topic,
            records,
            partitions,
        } => produce(&brokers, &topic, records, partitions),
        Cmd::Setup {
            brokers,
            topic,
            dir,
        } => setup(&brokers, &topic, &dir),
        Cmd::Count {
            brokers,
            topic,
            records,
        } => count(&brokers, &topic, records),
    }
}
