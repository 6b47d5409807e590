//! A closed window into a pipeline batch: decode, reject oversized and
//! malformed messages, the malformed share. Shared by `run` and `replay`.

use rdkafka::Message as _;
use rdkafka::message::Headers;

use crate::compare::{Check, Finding, Severity, Verdict};
use crate::config::model::{KafkaSource, KafkaTrust, MessageFormat, Rules};
use crate::decode::ipc::IpcDecoder;
use crate::decode::json::{Decoded, JsonDecoder, Message};
use crate::source::{Batch, BatchOrigin, Input};
use crate::store::history::History;

use super::{OwnedMsg, Window};
use super::{batch_id, origin_label};

/// A consumed message, owned, with its trust tag and batch-id header read
/// as the rules say (live runs and replays read messages the same way).
pub(crate) fn own_message(
    cfg: &KafkaSource,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> (String, i32, OwnedMsg) {
    let header = |name: &str| -> Option<String> {
        m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    let tag = match &cfg.trust {
        KafkaTrust::Records => None,
        KafkaTrust::Header(h) => header(h),
        KafkaTrust::Topics(map) => map.get(m.topic()).cloned(),
    };
    let batch_key = cfg.batch_id_header.as_deref().and_then(header);
    (
        m.topic().to_string(),
        m.partition(),
        OwnedMsg {
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            tag,
            batch_key,
        },
    )
}

/// A closed window decoded and ready to commit: what [`WindowDecoder::prepare`]
/// found, before the dead-letter step (live only) and the history commit.
pub(crate) struct Prepared {
    origin: BatchOrigin,
    id: String,
    sha: String,
    /// The batch is in the history already: nothing was decoded.
    committed: bool,
    decoded: Decoded,
    /// Messages that could not be used (index in the window, reason).
    pub rejected: Vec<(usize, String)>,
    messages: u64,
}

impl Prepared {
    /// Rows decoded from the good messages.
    pub fn rows(&self) -> u64 {
        self.decoded.rows
    }
}

/// What `run` and `replay` on Kafka share: decode a closed window
/// (rejecting oversized and malformed messages) into a pipeline batch. It
/// never talks to Kafka: dead-lettering and offsets are the live run's
/// business.
pub(crate) struct WindowDecoder {
    cfg: KafkaSource,
    dataset: String,
    /// `thresholds.malformed_max_share`.
    malformed_max_share: f64,
    json: Option<JsonDecoder>,
    ipc: Option<IpcDecoder>,
    /// Whether each partition is a stream of evidence of its own (a
    /// shared history), or all are one, in commit order (see
    /// [`crate::source::stream`]).
    partition_streams: bool,
}

impl WindowDecoder {
    pub fn new(rules: &Rules, cfg: &KafkaSource) -> WindowDecoder {
        let tags_fill = cfg.trust != KafkaTrust::Records;
        let (json, ipc) = match cfg.format {
            MessageFormat::ArrowIpc => (None, Some(IpcDecoder::new(rules, tags_fill))),
            f => (Some(JsonDecoder::new(rules, f, tags_fill)), None),
        };
        WindowDecoder {
            cfg: cfg.clone(),
            dataset: rules.dataset.clone(),
            malformed_max_share: rules.thresholds.malformed_max_share,
            json,
            ipc,
            partition_streams: rules.shared_history.is_some(),
        }
    }

    /// Decode a window, unless its batch is already in the history.
    pub fn prepare(&self, history: &History, w: &Window) -> Prepared {
        let (first, last) = (w.first(), w.last());
        let sha = w.sha256();
        let id = batch_id(&self.dataset, &w.topic, w.partition, first, last, &sha);
        let origin = BatchOrigin {
            source: origin_label(&w.topic, w.partition, first, last),
            name: origin_label(&w.topic, w.partition, first, last),
            size: w.bytes,
            stream: if self.partition_streams {
                crate::source::stream::kafka(&w.topic, w.partition)
            } else {
                crate::source::stream::KAFKA.to_string()
            },
        };
        if history.contains(&id) {
            return Prepared {
                origin,
                id,
                sha,
                committed: true,
                decoded: Decoded::default(),
                rejected: Vec::new(),
                messages: w.msgs.len() as u64,
            };
        }
        // Oversized messages are rejected unread; the rest are decoded.
        let limit = self.cfg.max_message_bytes;
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut keep: Vec<usize> = Vec::new();
        for (i, m) in w.msgs.iter().enumerate() {
            if m.payload.len() as u64 > limit {
                rejected.push((
                    i,
                    format!(
                        "the message is {} bytes, over the limit of {limit} (source.kafka.max_message_bytes)",
                        m.payload.len()
                    ),
                ));
            } else {
                keep.push(i);
            }
        }
        let msgs: Vec<Message<'_>> = keep
            .iter()
            .map(|&i| Message {
                payload: &w.msgs[i].payload,
                tag: w.msgs[i].tag.as_deref(),
            })
            .collect();
        let decoded: Decoded = match (&self.json, &self.ipc) {
            (Some(j), _) => j.decode(&msgs),
            (None, Some(d)) => d.decode(&msgs),
            (None, None) => Decoded::default(),
        };
        rejected.extend(decoded.rejected.iter().map(|(i, r)| (keep[*i], r.clone())));
        rejected.sort_by_key(|(i, _)| *i);
        Prepared {
            origin,
            id,
            sha,
            committed: false,
            decoded,
            rejected,
            messages: w.msgs.len() as u64,
        }
    }

    /// A prepared window as a pipeline batch, with a malformed-share
    /// finding when too many messages were bad (the pipeline processes it,
    /// finds the same bytes as an earlier batch, or quarantines it when no
    /// message could be used).
    pub fn batch_of(&self, p: Prepared) -> Batch {
        let Prepared {
            origin,
            id,
            sha,
            committed,
            decoded,
            rejected,
            messages: n,
        } = p;
        if committed {
            return Batch {
                origin,
                id,
                sha256: sha,
                input: Input::Committed,
            };
        }
        let bad = rejected.len() as u64;
        let share = bad as f64 / n as f64;
        let threshold = self.malformed_max_share;
        let extra = if bad > 0 && share > threshold {
            vec![malformed_finding(
                &self.cfg, bad, n, share, threshold, &rejected,
            )]
        } else {
            Vec::new()
        };
        Batch {
            origin,
            id,
            sha256: sha,
            input: Input::Decoded {
                decoded,
                rejected,
                extra,
            },
        }
    }
}

fn malformed_finding(
    cfg: &KafkaSource,
    bad: u64,
    n: u64,
    share: f64,
    threshold: f64,
    rejected: &[(usize, String)],
) -> Finding {
    let whereto = match &cfg.dead_letter_topic {
        Some(t) => format!("sent to the dead-letter topic `{t}`"),
        None => "skipped (no dead-letter topic)".to_string(),
    };
    let mut f = Finding::batch_level(
        Check::MalformedRecords,
        Verdict::DataQuality,
        Severity::Warning,
        format!(
            "{bad} of {n} messages ({:.2}%) could not be used and were {whereto}, above the tolerated {:.2}% (thresholds.malformed_max_share); the first: {}",
            share * 100.0,
            threshold * 100.0,
            rejected.first().map_or("", |(_, r)| r.as_str())
        ),
    );
    f.baseline_value = threshold;
    f.observed_value = share;
    f.statistic = Some(bad as f64);
    f.threshold = threshold;
    f.effect_size = share;
    f
}
