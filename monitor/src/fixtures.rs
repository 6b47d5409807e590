//! Deterministic synthetic ingestion batches for dqmon's tests, golden cases
//! and benchmarks.
//!
//! This module owns:
//! - the synthetic event data model (one [`RecordBatch`] per hour of
//!   ingestion: timestamps, users, PII e-mail, amounts, ages, countries,
//!   devices, merchant categories, trust tags, labels and free text);
//! - the attack and drift [`Scenario`]s layered on top of clean batches;
//! - deterministic Parquet writers for single batches and for the full
//!   evaluation suite ([`write_suite`]).
//!
//! It must NOT compute statistics or make monitoring decisions (that is the
//! monitor's job), read the clock, or touch any global / thread-local RNG:
//! every value is a pure function of a [`BatchSpec`], so the same spec always
//! yields the same batch and the same Parquet bytes. Randomness comes only
//! from [`SmallRng`] streams seeded from `(seed, batch_index, stream)` through
//! a fixed SplitMix64 mixing function.
//!
//! Note: `SmallRng`'s algorithm is not guaranteed to be stable across `rand`
//! releases, so golden files should be regenerated when `rand` is upgraded.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Float64Array, Int8Array, Int32Array, Int64Array, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};

// ---------------------------------------------------------------------------
// Public constants and vocabularies
// ---------------------------------------------------------------------------

/// Column names, in schema order.
pub const COLUMNS: [&str; 11] = [
    "event_time",
    "user_id",
    "email",
    "amount",
    "age",
    "country",
    "device",
    "merchant_category",
    "trust_tag",
    "label",
    "free_text",
];

/// Columns that hold personal data (subject to PII rules).
pub const PII_COLUMNS: [&str; 1] = ["email"];

/// 2024-06-01T00:00:00Z in microseconds since the Unix epoch; batch `i`
/// covers `[EPOCH + i h, EPOCH + (i+1) h)`.
pub const BASE_EPOCH_MICROS: i64 = 1_717_200_000_000_000;
/// One hour in microseconds.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// First user id; ids are `USER_ID_BASE + uniform(0..rows * USER_ID_SPACE_PER_ROW)`.
pub const USER_ID_BASE: i64 = 1_000_000_000;
/// Size of the user-id space per generated row (high cardinality).
pub const USER_ID_SPACE_PER_ROW: u64 = 50;

/// Log-normal `mu` of `amount`.
pub const AMOUNT_LOG_MEAN: f64 = 3.5;
/// Log-normal `sigma` of `amount`.
pub const AMOUNT_LOG_SIGMA: f64 = 1.2;
/// Natural null share of `amount`.
pub const AMOUNT_NULL_SHARE: f64 = 0.02;
/// Out-of-range `amount` values are drawn from `[1e6, 1e7)`.
pub const AMOUNT_OUT_OF_RANGE: (f64, f64) = (1e6, 1e7);

/// Mean of the (clipped) normal `age`.
pub const AGE_MEAN: f64 = 38.0;
/// Standard deviation of the (clipped) normal `age`.
pub const AGE_SD: f64 = 13.0;
/// Smallest normal `age`.
pub const AGE_MIN: i32 = 18;
/// Largest normal `age`.
pub const AGE_MAX: i32 = 90;
/// Natural null share of `age`.
pub const AGE_NULL_SHARE: f64 = 0.01;
/// Out-of-range `age` values are drawn from `150..=250`.
pub const AGE_OUT_OF_RANGE: (i32, i32) = (150, 250);

/// Zipf exponent of the country distribution (rank = position in [`countries`]).
pub const COUNTRY_ZIPF_S: f64 = 1.1;

/// Device categories.
pub const DEVICES: [&str; 5] = [
    "mobile_android",
    "mobile_ios",
    "desktop_web",
    "tablet",
    "smart_tv",
];
/// Probabilities of [`DEVICES`].
pub const DEVICE_WEIGHTS: [f64; 5] = [0.42, 0.33, 0.18, 0.05, 0.02];

/// Number of merchant category codes (`mcc_0000`..`mcc_0499`).
pub const MERCHANT_CATEGORY_COUNT: usize = 500;
/// Zipf exponent of the merchant category distribution (rank = code number + 1).
pub const MERCHANT_ZIPF_S: f64 = 1.0;
/// Natural null share of `merchant_category`.
pub const MERCHANT_NULL_SHARE: f64 = 0.005;

/// Trust tags (data sources of differing trust).
pub const TRUST_TAGS: [&str; 4] = ["human_reviewed", "vendor", "user_reported", "scraped"];
/// Probabilities of [`TRUST_TAGS`].
pub const TRUST_TAG_WEIGHTS: [f64; 4] = [0.2, 0.3, 0.3, 0.2];
/// Positive-label rate per trust tag (same order as [`TRUST_TAGS`]).
pub const TAG_LABEL_RATES: [f64; 4] = [0.025, 0.028, 0.035, 0.032];

/// Parquet row-group size used by [`write_parquet`].
pub const PARQUET_ROW_GROUP_ROWS: usize = 131_072;
/// Fixed `created_by` written into every fixture Parquet footer.
pub const PARQUET_CREATED_BY: &str = "dqmon-fixtures";

/// Share of the device mass moved onto `mobile_ios` per unit of
/// [`Scenario::NaturalDrift`] strength (capped at 1).
pub const DRIFT_IOS_SHIFT_PER_STRENGTH: f64 = 0.5;

const COUNTRIES: [&str; 60] = [
    "US", "GB", "DE", "FR", "IN", "BR", "CA", "AU", "JP", "ES", "IT", "MX", "NL", "PL", "SE", "TR",
    "KR", "ID", "PH", "NG", "ZA", "AR", "CO", "CL", "PE", "EG", "SA", "AE", "IL", "CH", "AT", "BE",
    "DK", "NO", "FI", "IE", "PT", "GR", "CZ", "RO", "HU", "UA", "VN", "TH", "MY", "SG", "NZ", "PK",
    "BD", "KE", "MA", "DZ", "TW", "HK", "CN", "UY", "EC", "GT", "CR", "LK",
];

const FREE_TEXT_WORDS: [&str; 60] = [
    "refund",
    "order",
    "delivery",
    "late",
    "missing",
    "item",
    "damaged",
    "payment",
    "charge",
    "card",
    "declined",
    "account",
    "locked",
    "password",
    "reset",
    "login",
    "error",
    "app",
    "crash",
    "update",
    "shipping",
    "address",
    "change",
    "cancel",
    "subscription",
    "invoice",
    "receipt",
    "wrong",
    "size",
    "color",
    "return",
    "label",
    "tracking",
    "number",
    "package",
    "courier",
    "store",
    "credit",
    "voucher",
    "discount",
    "code",
    "expired",
    "help",
    "please",
    "urgent",
    "twice",
    "double",
    "billed",
    "fraud",
    "unauthorized",
    "transaction",
    "email",
    "phone",
    "verify",
    "support",
    "agent",
    "chat",
    "waiting",
    "status",
    "exchange",
];

/// The 60 two-letter country codes, most frequent first.
pub fn countries() -> &'static [&'static str] {
    &COUNTRIES
}

/// Merchant category codes `mcc_0000`..`mcc_0499`, most frequent first.
pub fn merchant_categories() -> &'static [String] {
    static MCC: OnceLock<Vec<String>> = OnceLock::new();
    MCC.get_or_init(|| {
        (0..MERCHANT_CATEGORY_COUNT)
            .map(|i| format!("mcc_{i:04}"))
            .collect()
    })
}

/// The support-ticket vocabulary `free_text` phrases are built from.
pub fn free_text_words() -> &'static [&'static str] {
    &FREE_TEXT_WORDS
}

/// Normalised Zipf weights `1/k^s` for ranks `k = 1..=n`.
pub fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    let raw: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / total).collect()
}

/// Start of the hour covered by batch `batch_index`, in microseconds since the epoch.
pub fn hour_start_micros(batch_index: u64) -> i64 {
    BASE_EPOCH_MICROS + (batch_index as i64) * HOUR_MICROS
}

/// The fixture schema (all columns nullable, so any column can be nulled by
/// [`Scenario::MissingJump`]).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("user_id", DataType::Int64, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("age", DataType::Int32, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("device", DataType::Utf8, true),
        Field::new("merchant_category", DataType::Utf8, true),
        Field::new("trust_tag", DataType::Utf8, true),
        Field::new("label", DataType::Int8, true),
        Field::new("free_text", DataType::Utf8, true),
    ]))
}

// ---------------------------------------------------------------------------
// Spec, scenarios, errors
// ---------------------------------------------------------------------------

/// Everything needed to generate one batch; generation is a pure function of it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSpec {
    /// Base row count (scenarios may add rows).
    pub rows: usize,
    /// Suite-level seed.
    pub seed: u64,
    /// Position of the batch in time: batch `i` covers hour `i` after 2024-06-01T00:00Z.
    pub batch_index: u64,
    /// What to do to the clean batch.
    pub scenario: Scenario,
}

/// A clean batch or a clean batch with one attack / drift applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// No modification.
    Clean,
    /// Flip `strength` (share, e.g. 0.02..0.3) of the negative labels of ONE tag to positive.
    LabelFlip { tag: String, strength: f64 },
    /// Flip `strength` of the negative labels of ONE tag to positive, only
    /// on rows where categorical `column` (country, device,
    /// merchant_category) is `value`: the tag's overall rate barely moves.
    TargetedFlip {
        tag: String,
        column: String,
        value: String,
        strength: f64,
    },
    /// A new value (not in the normal vocabulary) planted in `column` for `share` of the rows of `tag` (None = all tags).
    PlantedCategory {
        column: String,
        value: String,
        share: f64,
        tag: Option<String>,
    },
    /// Raise the null share of `column` to `share` (all tags).
    MissingJump { column: String, share: f64 },
    /// Replace `share` of `column`'s values (numeric column: amount or age) with values far outside the normal range (e.g. age 150..=250, amount 1e6..1e7).
    OutOfRange { column: String, share: f64 },
    /// Add extra rows so that `tag`'s share of the batch becomes `share` (a fake-report flood); the extra rows look normal otherwise but carry label rate `label_rate`.
    TagFlood {
        tag: String,
        share: f64,
        label_rate: f64,
    },
    /// Multiply the row count by `factor`.
    RowSpike { factor: f64 },
    /// Duplicate `share` of the rows (exact copies of existing rows, appended).
    DuplicateBurst { share: f64 },
    /// Natural drift affecting every tag together: amount log-normal mean shifted by `strength` (e.g. 0.3), device mix shifted toward mobile_ios, label rate scaled by (1+strength) in every tag.
    NaturalDrift { strength: f64 },
    /// Drop a column entirely (schema change).
    DropColumn { column: String },
}

impl Scenario {
    /// Stable slug used for file names and reports, e.g. `label_flip_scraped_0.05`.
    pub fn name(&self) -> String {
        let raw = match self {
            Scenario::Clean => "clean".to_string(),
            Scenario::LabelFlip { tag, strength } => format!("label_flip_{tag}_{strength}"),
            Scenario::TargetedFlip {
                tag,
                column,
                value,
                strength,
            } => format!("targeted_flip_{tag}_{column}_{value}_{strength}"),
            Scenario::PlantedCategory {
                column,
                value,
                share,
                tag,
            } => format!(
                "planted_category_{column}_{value}_{}_{share}",
                tag.as_deref().unwrap_or("all")
            ),
            Scenario::MissingJump { column, share } => format!("missing_jump_{column}_{share}"),
            Scenario::OutOfRange { column, share } => format!("out_of_range_{column}_{share}"),
            Scenario::TagFlood {
                tag,
                share,
                label_rate,
            } => format!("tag_flood_{tag}_{share}_label_{label_rate}"),
            Scenario::RowSpike { factor } => format!("row_spike_{factor}"),
            Scenario::DuplicateBurst { share } => format!("duplicate_burst_{share}"),
            Scenario::NaturalDrift { strength } => format!("natural_drift_{strength}"),
            Scenario::DropColumn { column } => format!("drop_column_{column}"),
        };
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Errors from fixture generation and writing.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The spec cannot be generated (unknown column / tag, share out of range, ...).
    #[error("invalid fixture spec: {0}")]
    InvalidSpec(String),
    /// Arrow failed to assemble the batch.
    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),
    /// Parquet encoding failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] ParquetError),
    /// File-system error.
    #[error("i/o error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FixtureError + '_ {
    move |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------

const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of batch `batch_index` in a suite seeded with `seed` (fixed SplitMix64 mixing).
pub fn batch_seed(seed: u64, batch_index: u64) -> u64 {
    splitmix64(seed ^ splitmix64(batch_index ^ 0x6471_6d6f_6e5f_6678))
}

/// Independent RNG stream `stream` of a batch. Each column has its own stream,
/// so a scenario that changes one column's distribution leaves the others
/// byte-identical to the clean batch with the same seed.
fn stream_rng(batch_seed: u64, stream: u64) -> SmallRng {
    SmallRng::seed_from_u64(splitmix64(
        batch_seed ^ splitmix64(stream.wrapping_mul(0xA076_1D64_78BD_642F)),
    ))
}

mod stream {
    pub const TIME: u64 = 1;
    pub const USER: u64 = 2;
    pub const AMOUNT: u64 = 3;
    pub const AGE: u64 = 4;
    pub const COUNTRY: u64 = 5;
    pub const DEVICE: u64 = 6;
    pub const MERCHANT: u64 = 7;
    pub const TAG: u64 = 8;
    pub const LABEL: u64 = 9;
    pub const TEXT: u64 = 10;
    /// Offset added to every column stream for rows added by a scenario.
    pub const EXTRA_ROWS: u64 = 100;
    /// Stream for scenario decisions (which rows to flip / null / copy ...).
    pub const SCENARIO: u64 = 1000;
}

// ---------------------------------------------------------------------------
// Row model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    EventTime,
    UserId,
    Email,
    Amount,
    Age,
    Country,
    Device,
    MerchantCategory,
    TrustTag,
    Label,
    FreeText,
}

impl Col {
    fn parse(name: &str) -> Result<Col, FixtureError> {
        Ok(match name {
            "event_time" => Col::EventTime,
            "user_id" => Col::UserId,
            "email" => Col::Email,
            "amount" => Col::Amount,
            "age" => Col::Age,
            "country" => Col::Country,
            "device" => Col::Device,
            "merchant_category" => Col::MerchantCategory,
            "trust_tag" => Col::TrustTag,
            "label" => Col::Label,
            "free_text" => Col::FreeText,
            other => {
                return Err(FixtureError::InvalidSpec(format!(
                    "unknown column {other:?} (expected one of {COLUMNS:?})"
                )));
            }
        })
    }

    /// Normal vocabulary of a categorical column.
    fn vocabulary(self) -> Option<Vec<&'static str>> {
        match self {
            Col::Country => Some(COUNTRIES.to_vec()),
            Col::Device => Some(DEVICES.to_vec()),
            Col::MerchantCategory => {
                Some(merchant_categories().iter().map(String::as_str).collect())
            }
            Col::TrustTag => Some(TRUST_TAGS.to_vec()),
            _ => None,
        }
    }
}

/// Code of the planted value in a categorical column.
const PLANTED: u32 = u32::MAX;

/// Struct-of-vectors row store; categorical columns hold vocabulary codes,
/// `email` holds the user id the address is derived from and `free_text`
/// holds the key its phrase is derived from.
#[derive(Debug, Clone, Default)]
struct Rows {
    event_time: Vec<Option<i64>>,
    user_id: Vec<Option<i64>>,
    email: Vec<Option<i64>>,
    amount: Vec<Option<f64>>,
    age: Vec<Option<i32>>,
    country: Vec<Option<u32>>,
    device: Vec<Option<u32>>,
    merchant_category: Vec<Option<u32>>,
    trust_tag: Vec<Option<u32>>,
    label: Vec<Option<i8>>,
    free_text: Vec<Option<u64>>,
    /// `(column, value)` shown for [`PLANTED`] codes.
    planted: Option<(Col, String)>,
}

fn pick<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| v[i]).collect()
}

impl Rows {
    fn len(&self) -> usize {
        self.event_time.len()
    }

    fn take(&self, idx: &[usize]) -> Rows {
        Rows {
            event_time: pick(&self.event_time, idx),
            user_id: pick(&self.user_id, idx),
            email: pick(&self.email, idx),
            amount: pick(&self.amount, idx),
            age: pick(&self.age, idx),
            country: pick(&self.country, idx),
            device: pick(&self.device, idx),
            merchant_category: pick(&self.merchant_category, idx),
            trust_tag: pick(&self.trust_tag, idx),
            label: pick(&self.label, idx),
            free_text: pick(&self.free_text, idx),
            planted: self.planted.clone(),
        }
    }

    fn append(&mut self, other: Rows) {
        self.event_time.extend(other.event_time);
        self.user_id.extend(other.user_id);
        self.email.extend(other.email);
        self.amount.extend(other.amount);
        self.age.extend(other.age);
        self.country.extend(other.country);
        self.device.extend(other.device);
        self.merchant_category.extend(other.merchant_category);
        self.trust_tag.extend(other.trust_tag);
        self.label.extend(other.label);
        self.free_text.extend(other.free_text);
    }

    fn is_null(&self, col: Col, i: usize) -> bool {
        match col {
            Col::EventTime => self.event_time[i].is_none(),
            Col::UserId => self.user_id[i].is_none(),
            Col::Email => self.email[i].is_none(),
            Col::Amount => self.amount[i].is_none(),
            Col::Age => self.age[i].is_none(),
            Col::Country => self.country[i].is_none(),
            Col::Device => self.device[i].is_none(),
            Col::MerchantCategory => self.merchant_category[i].is_none(),
            Col::TrustTag => self.trust_tag[i].is_none(),
            Col::Label => self.label[i].is_none(),
            Col::FreeText => self.free_text[i].is_none(),
        }
    }

    fn set_null(&mut self, col: Col, i: usize) {
        match col {
            Col::EventTime => self.event_time[i] = None,
            Col::UserId => self.user_id[i] = None,
            Col::Email => self.email[i] = None,
            Col::Amount => self.amount[i] = None,
            Col::Age => self.age[i] = None,
            Col::Country => self.country[i] = None,
            Col::Device => self.device[i] = None,
            Col::MerchantCategory => self.merchant_category[i] = None,
            Col::TrustTag => self.trust_tag[i] = None,
            Col::Label => self.label[i] = None,
            Col::FreeText => self.free_text[i] = None,
        }
    }

    fn categorical_mut(&mut self, col: Col) -> &mut Vec<Option<u32>> {
        match col {
            Col::Country => &mut self.country,
            Col::Device => &mut self.device,
            Col::MerchantCategory => &mut self.merchant_category,
            Col::TrustTag => &mut self.trust_tag,
            other => unreachable!("{other:?} is not categorical"),
        }
    }

    /// Stable reorder by event time (nulls first, ties keep their order).
    fn sort_by_time(&mut self) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_by_key(|&i| self.event_time[i]);
        *self = self.take(&idx);
    }
}

/// Inverse-CDF sampler over a fixed discrete distribution (one uniform per draw).
struct Categorical {
    cdf: Vec<f64>,
}

impl Categorical {
    fn new(weights: &[f64]) -> Categorical {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Categorical { cdf }
    }

    fn sample(&self, rng: &mut SmallRng) -> u32 {
        let u: f64 = rng.random();
        let i = self.cdf.partition_point(|&c| c <= u);
        i.min(self.cdf.len() - 1) as u32
    }
}

/// How event times are laid out within the hour.
#[derive(Debug, Clone, Copy)]
enum TimeLayout {
    /// Evenly spread, strictly ordered, with jitter under half a slot.
    Even,
    /// Uniform random within the hour, then sorted.
    Uniform,
}

/// Distribution parameters of one generation pass.
#[derive(Debug, Clone)]
struct GenParams {
    hour_start: i64,
    time_layout: TimeLayout,
    /// User ids are drawn from `USER_ID_BASE + 0..user_space`.
    user_space: u64,
    amount_mu: f64,
    device_weights: [f64; 5],
    /// Label rate multiplier applied to every tag.
    label_scale: f64,
    /// Force every row onto this tag with this label rate.
    forced_tag: Option<(u32, f64)>,
}

impl GenParams {
    fn clean(rows: usize, batch_index: u64) -> GenParams {
        GenParams {
            hour_start: hour_start_micros(batch_index),
            time_layout: TimeLayout::Even,
            user_space: (rows.max(1) as u64) * USER_ID_SPACE_PER_ROW,
            amount_mu: AMOUNT_LOG_MEAN,
            device_weights: DEVICE_WEIGHTS,
            label_scale: 1.0,
            forced_tag: None,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn countries_sampler() -> &'static Categorical {
    static S: OnceLock<Categorical> = OnceLock::new();
    S.get_or_init(|| Categorical::new(&zipf_weights(COUNTRIES.len(), COUNTRY_ZIPF_S)))
}

fn merchant_sampler() -> &'static Categorical {
    static S: OnceLock<Categorical> = OnceLock::new();
    S.get_or_init(|| Categorical::new(&zipf_weights(MERCHANT_CATEGORY_COUNT, MERCHANT_ZIPF_S)))
}

/// Generate `n` rows from independent per-column streams (`stream_offset`
/// separates the streams of scenario-added rows from the base rows).
fn gen_rows(n: usize, bseed: u64, stream_offset: u64, p: &GenParams) -> Rows {
    let rng = |s: u64| stream_rng(bseed, s + stream_offset);

    // event_time
    let mut r = rng(stream::TIME);
    let event_time: Vec<Option<i64>> = match p.time_layout {
        TimeLayout::Even => {
            let step = HOUR_MICROS as f64 / n.max(1) as f64;
            (0..n)
                .map(|i| {
                    let jitter: f64 = r.random::<f64>() * 0.5;
                    Some(p.hour_start + ((i as f64 + jitter) * step) as i64)
                })
                .collect()
        }
        TimeLayout::Uniform => {
            let mut t: Vec<i64> = (0..n)
                .map(|_| p.hour_start + r.random_range(0..HOUR_MICROS))
                .collect();
            t.sort_unstable();
            t.into_iter().map(Some).collect()
        }
    };

    // user_id / email
    let mut r = rng(stream::USER);
    let user_id: Vec<Option<i64>> = (0..n)
        .map(|_| Some(USER_ID_BASE + r.random_range(0..p.user_space) as i64))
        .collect();
    let email = user_id.clone();

    // amount
    let mut r = rng(stream::AMOUNT);
    let lognormal = LogNormal::new(p.amount_mu, AMOUNT_LOG_SIGMA).expect("valid log-normal");
    let amount: Vec<Option<f64>> = (0..n)
        .map(|_| {
            let null = r.random_bool(AMOUNT_NULL_SHARE);
            let v = round2(lognormal.sample(&mut r));
            (!null).then_some(v)
        })
        .collect();

    // age
    let mut r = rng(stream::AGE);
    let normal = Normal::new(AGE_MEAN, AGE_SD).expect("valid normal");
    let age: Vec<Option<i32>> = (0..n)
        .map(|_| {
            let null = r.random_bool(AGE_NULL_SHARE);
            let v = (normal.sample(&mut r).round() as i32).clamp(AGE_MIN, AGE_MAX);
            (!null).then_some(v)
        })
        .collect();

    // country
    let mut r = rng(stream::COUNTRY);
    let cs = countries_sampler();
    let country: Vec<Option<u32>> = (0..n).map(|_| Some(cs.sample(&mut r))).collect();

    // device
    let mut r = rng(stream::DEVICE);
    let ds = Categorical::new(&p.device_weights);
    let device: Vec<Option<u32>> = (0..n).map(|_| Some(ds.sample(&mut r))).collect();

    // merchant_category
    let mut r = rng(stream::MERCHANT);
    let ms = merchant_sampler();
    let merchant_category: Vec<Option<u32>> = (0..n)
        .map(|_| {
            let null = r.random_bool(MERCHANT_NULL_SHARE);
            let v = ms.sample(&mut r);
            (!null).then_some(v)
        })
        .collect();

    // trust_tag
    let mut r = rng(stream::TAG);
    let ts = Categorical::new(&TRUST_TAG_WEIGHTS);
    let trust_tag: Vec<Option<u32>> = (0..n)
        .map(|_| {
            let v = ts.sample(&mut r);
            Some(p.forced_tag.map_or(v, |(t, _)| t))
        })
        .collect();

    // label
    let mut r = rng(stream::LABEL);
    let label: Vec<Option<i8>> = trust_tag
        .iter()
        .map(|t| {
            let t = t.expect("tags are generated non-null") as usize;
            let rate = match p.forced_tag {
                Some((_, rate)) => rate,
                None => TAG_LABEL_RATES[t] * p.label_scale,
            };
            let u: f64 = r.random();
            Some(i8::from(u < rate))
        })
        .collect();

    // free_text
    let mut r = rng(stream::TEXT);
    let free_text: Vec<Option<u64>> = (0..n).map(|_| Some(r.random())).collect();

    Rows {
        event_time,
        user_id,
        email,
        amount,
        age,
        country,
        device,
        merchant_category,
        trust_tag,
        label,
        free_text,
        planted: None,
    }
}

// ---------------------------------------------------------------------------
// Scenario application
// ---------------------------------------------------------------------------

fn check_share(what: &str, v: f64) -> Result<(), FixtureError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(FixtureError::InvalidSpec(format!(
            "{what} must be within [0, 1], got {v}"
        )))
    }
}

fn tag_index(tag: &str) -> Result<u32, FixtureError> {
    TRUST_TAGS
        .iter()
        .position(|t| *t == tag)
        .map(|i| i as u32)
        .ok_or_else(|| {
            FixtureError::InvalidSpec(format!(
                "unknown trust tag {tag:?} (expected one of {TRUST_TAGS:?})"
            ))
        })
}

/// `round(share * n)`, clamped to `n`.
fn share_count(share: f64, n: usize) -> usize {
    ((share * n as f64).round() as usize).min(n)
}

/// Exactly `amount` distinct elements of `candidates`, chosen uniformly.
fn choose(rng: &mut SmallRng, candidates: &[usize], amount: usize) -> Vec<usize> {
    let amount = amount.min(candidates.len());
    rand::seq::index::sample(rng, candidates.len(), amount)
        .into_iter()
        .map(|i| candidates[i])
        .collect()
}

/// Flip `strength` of the `negatives` (row indices) to positive.
fn flip_to_positive(rows: &mut Rows, srng: &mut SmallRng, negatives: &[usize], strength: f64) {
    let k = share_count(strength, negatives.len());
    for i in choose(srng, negatives, k) {
        rows.label[i] = Some(1);
    }
}

/// The column and vocabulary index of a targeted flip's value.
fn target_index(column: &str, value: &str) -> Result<(Col, u32), FixtureError> {
    let col = Col::parse(column)?;
    if !matches!(col, Col::Country | Col::Device | Col::MerchantCategory) {
        return Err(FixtureError::InvalidSpec(format!(
            "targeted_flip needs country, device or merchant_category, got {column:?}"
        )));
    }
    let vocab = col
        .vocabulary()
        .expect("categorical columns have a vocabulary");
    vocab
        .iter()
        .position(|v| *v == value)
        .map(|i| (col, i as u32))
        .ok_or_else(|| {
            FixtureError::InvalidSpec(format!("{value:?} is not in {column}'s vocabulary"))
        })
}

/// Check the scenario's parameters without generating anything.
fn validate(scenario: &Scenario) -> Result<(), FixtureError> {
    match scenario {
        Scenario::Clean => {}
        Scenario::LabelFlip { tag, strength } => {
            tag_index(tag)?;
            check_share("label_flip strength", *strength)?;
        }
        Scenario::TargetedFlip {
            tag,
            column,
            value,
            strength,
        } => {
            tag_index(tag)?;
            check_share("targeted_flip strength", *strength)?;
            target_index(column, value)?;
        }
        Scenario::PlantedCategory {
            column,
            value,
            share,
            tag,
        } => {
            let col = Col::parse(column)?;
            let vocab = col.vocabulary().ok_or_else(|| {
                FixtureError::InvalidSpec(format!(
                    "planted_category needs a categorical column (country, device, merchant_category, trust_tag), got {column:?}"
                ))
            })?;
            if vocab.contains(&value.as_str()) {
                return Err(FixtureError::InvalidSpec(format!(
                    "planted value {value:?} is already in {column}'s vocabulary"
                )));
            }
            check_share("planted_category share", *share)?;
            if let Some(tag) = tag {
                tag_index(tag)?;
            }
        }
        Scenario::MissingJump { column, share } => {
            Col::parse(column)?;
            check_share("missing_jump share", *share)?;
        }
        Scenario::OutOfRange { column, share } => {
            match Col::parse(column)? {
                Col::Age | Col::Amount => {}
                _ => {
                    return Err(FixtureError::InvalidSpec(format!(
                        "out_of_range supports amount and age, got {column:?}"
                    )));
                }
            }
            check_share("out_of_range share", *share)?;
        }
        Scenario::TagFlood {
            tag,
            share,
            label_rate,
        } => {
            tag_index(tag)?;
            check_share("tag_flood share", *share)?;
            if *share >= 1.0 {
                return Err(FixtureError::InvalidSpec(
                    "tag_flood share must be below 1".into(),
                ));
            }
            check_share("tag_flood label_rate", *label_rate)?;
        }
        Scenario::RowSpike { factor } => {
            if !(factor.is_finite() && *factor > 0.0) {
                return Err(FixtureError::InvalidSpec(format!(
                    "row_spike factor must be finite and positive, got {factor}"
                )));
            }
        }
        Scenario::DuplicateBurst { share } => check_share("duplicate_burst share", *share)?,
        Scenario::NaturalDrift { strength } => {
            if !(strength.is_finite() && *strength >= 0.0) {
                return Err(FixtureError::InvalidSpec(format!(
                    "natural_drift strength must be finite and non-negative, got {strength}"
                )));
            }
        }
        Scenario::DropColumn { column } => {
            Col::parse(column)?;
        }
    }
    Ok(())
}

fn build_rows(spec: &BatchSpec) -> Result<Rows, FixtureError> {
    validate(&spec.scenario)?;
    let bseed = batch_seed(spec.seed, spec.batch_index);
    let mut srng = stream_rng(bseed, stream::SCENARIO);
    let mut params = GenParams::clean(spec.rows, spec.batch_index);

    // Scenarios that change how the base rows are drawn.
    let base_rows = match &spec.scenario {
        Scenario::RowSpike { factor } => {
            let n = (spec.rows as f64 * factor).round() as usize;
            params.user_space = (n.max(1) as u64) * USER_ID_SPACE_PER_ROW;
            n
        }
        Scenario::NaturalDrift { strength } => {
            params.amount_mu += strength;
            params.label_scale = 1.0 + strength;
            let lambda = (strength * DRIFT_IOS_SHIFT_PER_STRENGTH).min(1.0);
            for (i, w) in params.device_weights.iter_mut().enumerate() {
                *w *= 1.0 - lambda;
                if DEVICES[i] == "mobile_ios" {
                    *w += lambda;
                }
            }
            spec.rows
        }
        _ => spec.rows,
    };
    let mut rows = gen_rows(base_rows, bseed, 0, &params);
    let n = rows.len();

    // Scenarios that modify or extend the generated rows.
    match &spec.scenario {
        Scenario::Clean
        | Scenario::RowSpike { .. }
        | Scenario::NaturalDrift { .. }
        | Scenario::DropColumn { .. } => {}
        Scenario::TargetedFlip {
            tag,
            column,
            value,
            strength,
        } => {
            let t = tag_index(tag)?;
            let (col, v) = target_index(column, value)?;
            let values = match col {
                Col::Country => &rows.country,
                Col::Device => &rows.device,
                _ => &rows.merchant_category,
            };
            let negatives: Vec<usize> = (0..n)
                .filter(|&i| {
                    rows.trust_tag[i] == Some(t) && rows.label[i] == Some(0) && values[i] == Some(v)
                })
                .collect();
            flip_to_positive(&mut rows, &mut srng, &negatives, *strength);
        }
        Scenario::LabelFlip { tag, strength } => {
            let t = tag_index(tag)?;
            let negatives: Vec<usize> = (0..n)
                .filter(|&i| rows.trust_tag[i] == Some(t) && rows.label[i] == Some(0))
                .collect();
            flip_to_positive(&mut rows, &mut srng, &negatives, *strength);
        }
        Scenario::PlantedCategory {
            column,
            value,
            share,
            tag,
        } => {
            let col = Col::parse(column)?;
            let t = tag.as_deref().map(tag_index).transpose()?;
            let candidates: Vec<usize> = (0..n)
                .filter(|&i| t.is_none() || rows.trust_tag[i] == t)
                .collect();
            let k = share_count(*share, candidates.len());
            let chosen = choose(&mut srng, &candidates, k);
            let codes = rows.categorical_mut(col);
            for i in chosen {
                codes[i] = Some(PLANTED);
            }
            rows.planted = Some((col, value.clone()));
        }
        Scenario::MissingJump { column, share } => {
            let col = Col::parse(column)?;
            let target = share_count(*share, n);
            let present: Vec<usize> = (0..n).filter(|&i| !rows.is_null(col, i)).collect();
            let current_nulls = n - present.len();
            if target > current_nulls {
                for i in choose(&mut srng, &present, target - current_nulls) {
                    rows.set_null(col, i);
                }
            }
        }
        Scenario::OutOfRange { column, share } => {
            let col = Col::parse(column)?;
            let all: Vec<usize> = (0..n).collect();
            let mut chosen = choose(&mut srng, &all, share_count(*share, n));
            chosen.sort_unstable();
            for i in chosen {
                match col {
                    Col::Age => {
                        rows.age[i] =
                            Some(srng.random_range(AGE_OUT_OF_RANGE.0..=AGE_OUT_OF_RANGE.1));
                    }
                    Col::Amount => {
                        rows.amount[i] = Some(round2(
                            srng.random_range(AMOUNT_OUT_OF_RANGE.0..AMOUNT_OUT_OF_RANGE.1),
                        ));
                    }
                    _ => unreachable!("validated"),
                }
            }
        }
        Scenario::TagFlood {
            tag,
            share,
            label_rate,
        } => {
            let t = tag_index(tag)?;
            let c = rows.trust_tag.iter().filter(|&&x| x == Some(t)).count() as f64;
            let extra = ((share * n as f64 - c) / (1.0 - share)).round().max(0.0) as usize;
            let flood_params = GenParams {
                time_layout: TimeLayout::Uniform,
                forced_tag: Some((t, *label_rate)),
                ..params
            };
            let flood = gen_rows(extra, bseed, stream::EXTRA_ROWS, &flood_params);
            rows.append(flood);
            rows.sort_by_time();
        }
        Scenario::DuplicateBurst { share } => {
            let all: Vec<usize> = (0..n).collect();
            let mut chosen = choose(&mut srng, &all, share_count(*share, n));
            chosen.sort_unstable();
            let copies = rows.take(&chosen);
            rows.append(copies);
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Arrow assembly
// ---------------------------------------------------------------------------

fn categorical_array(codes: &[Option<u32>], vocab: &[&str], planted: Option<&str>) -> ArrayRef {
    let bytes: usize = vocab.iter().map(|v| v.len()).max().unwrap_or(0) * codes.len();
    let mut b = StringBuilder::with_capacity(codes.len(), bytes);
    for c in codes {
        match c {
            Some(PLANTED) => b.append_value(planted.expect("planted value recorded")),
            Some(c) => b.append_value(vocab[*c as usize]),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

fn email_array(ids: &[Option<i64>]) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(ids.len(), ids.len() * 24);
    for id in ids {
        match id {
            Some(id) => {
                write!(b, "u{id}@example.com").expect("writing to a builder cannot fail");
                b.append_value("");
            }
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// Phrase of 2-6 vocabulary words plus ` #<order number>`, derived from `key`.
fn write_phrase(b: &mut StringBuilder, key: u64) {
    let mut s = splitmix64(key);
    let words = 2 + (s % 5) as usize;
    for w in 0..words {
        s = splitmix64(s);
        if w > 0 {
            b.write_char(' ').expect("writing to a builder cannot fail");
        }
        b.write_str(FREE_TEXT_WORDS[(s % FREE_TEXT_WORDS.len() as u64) as usize])
            .expect("writing to a builder cannot fail");
    }
    let order = 10_000_000 + splitmix64(s) % 90_000_000;
    write!(b, " #{order}").expect("writing to a builder cannot fail");
}

fn free_text_array(keys: &[Option<u64>]) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(keys.len(), keys.len() * 40);
    for k in keys {
        match k {
            Some(k) => {
                write_phrase(&mut b, *k);
                b.append_value("");
            }
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

fn into_batch(rows: Rows) -> Result<RecordBatch, FixtureError> {
    let planted_for = |col: Col| match &rows.planted {
        Some((c, v)) if *c == col => Some(v.as_str()),
        _ => None,
    };
    let mcc: Vec<&str> = merchant_categories().iter().map(String::as_str).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(rows.event_time.clone()).with_timezone("UTC")),
        Arc::new(Int64Array::from(rows.user_id.clone())),
        email_array(&rows.email),
        Arc::new(Float64Array::from(rows.amount.clone())),
        Arc::new(Int32Array::from(rows.age.clone())),
        categorical_array(&rows.country, &COUNTRIES, planted_for(Col::Country)),
        categorical_array(&rows.device, &DEVICES, planted_for(Col::Device)),
        categorical_array(
            &rows.merchant_category,
            &mcc,
            planted_for(Col::MerchantCategory),
        ),
        categorical_array(&rows.trust_tag, &TRUST_TAGS, planted_for(Col::TrustTag)),
        Arc::new(Int8Array::from(rows.label.clone())),
        free_text_array(&rows.free_text),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

// ---------------------------------------------------------------------------
// Public generation API
// ---------------------------------------------------------------------------

/// Generate the batch described by `spec`, or explain why the spec is invalid.
pub fn try_generate(spec: &BatchSpec) -> Result<RecordBatch, FixtureError> {
    let rows = build_rows(spec)?;
    let mut batch = into_batch(rows)?;
    if let Scenario::DropColumn { column } = &spec.scenario {
        let idx = batch.schema().index_of(column)?;
        batch.remove_column(idx);
    }
    Ok(batch)
}

/// Generate the batch described by `spec`; fully deterministic.
///
/// # Panics
/// If the spec is invalid (unknown column or tag, share outside `[0, 1]`, ...);
/// use [`try_generate`] to get the error instead.
pub fn generate(spec: &BatchSpec) -> RecordBatch {
    match try_generate(spec) {
        Ok(batch) => batch,
        Err(e) => panic!("fixtures::generate({spec:?}): {e}"),
    }
}

// ---------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------

/// Writer properties of every fixture file: snappy, 131 072-row row groups,
/// default dictionary encoding and a fixed `created_by` (nothing time-dependent).
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
        .set_created_by(PARQUET_CREATED_BY.to_string())
        .build()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Write `batch` to `path` as Parquet: written to `<path>.tmp`, synced, then
/// renamed into place. Same batch → byte-identical file.
pub fn write_parquet(batch: &RecordBatch, path: &Path) -> Result<(), FixtureError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties()))?;
        writer.write(batch)?;
        let file = writer.into_inner()?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// One file of the evaluation suite.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteFile {
    /// Absolute or `dir`-relative path (whatever `dir` was) of the written file.
    pub path: PathBuf,
    /// `"baseline"`, `"clean"`, `"attack"` or `"drift"`.
    pub group: &'static str,
    /// The scenario the file was generated with.
    pub scenario: Scenario,
}

/// `batch_index` of the first baseline batch (20 batches).
pub const SUITE_BASELINE_START: u64 = 0;
/// Number of baseline batches.
pub const SUITE_BASELINE_BATCHES: u64 = 20;
/// `batch_index` of the first clean control batch (10 batches).
pub const SUITE_CLEAN_START: u64 = 100;
/// Number of clean control batches.
pub const SUITE_CLEAN_BATCHES: u64 = 10;
/// `batch_index` of the first attack batch (one per [`suite_attacks`] entry).
pub const SUITE_ATTACK_START: u64 = 200;
/// `batch_index` of the first drift batch (one per [`suite_drifts`] entry).
pub const SUITE_DRIFT_START: u64 = 300;

/// The attack scenarios of [`write_suite`], in order.
pub fn suite_attacks() -> Vec<Scenario> {
    let mut v = Vec::new();
    for strength in [0.01, 0.02, 0.05, 0.1, 0.2] {
        v.push(Scenario::LabelFlip {
            tag: "scraped".into(),
            strength,
        });
    }
    v.push(Scenario::LabelFlip {
        tag: "user_reported".into(),
        strength: 0.05,
    });
    for share in [0.01, 0.05, 0.2] {
        v.push(Scenario::PlantedCategory {
            column: "merchant_category".into(),
            value: "mcc_9999".into(),
            share,
            tag: Some("user_reported".into()),
        });
    }
    for share in [0.1, 0.3] {
        v.push(Scenario::MissingJump {
            column: "amount".into(),
            share,
        });
    }
    for share in [0.005, 0.02, 0.1] {
        v.push(Scenario::OutOfRange {
            column: "age".into(),
            share,
        });
    }
    v.push(Scenario::TagFlood {
        tag: "user_reported".into(),
        share: 0.6,
        label_rate: 0.2,
    });
    v.push(Scenario::RowSpike { factor: 5.0 });
    v.push(Scenario::DuplicateBurst { share: 0.3 });
    v.push(Scenario::DropColumn {
        column: "age".into(),
    });
    v
}

/// The natural-drift scenarios of [`write_suite`], in order.
pub fn suite_drifts() -> Vec<Scenario> {
    [0.1, 0.3, 0.6]
        .into_iter()
        .map(|strength| Scenario::NaturalDrift { strength })
        .collect()
}

/// Write the evaluation suite under `dir`:
/// - `baseline/batch_000.parquet`..`batch_019.parquet`: clean, batch_index 0..20;
/// - `clean/clean_000.parquet`..`clean_009.parquet`: clean controls, batch_index 100..110;
/// - `attack/<scenario-name>.parquet`: [`suite_attacks`], batch_index 200..;
/// - `drift/<scenario-name>.parquet`: [`suite_drifts`], batch_index 300...
pub fn write_suite(dir: &Path, rows: usize, seed: u64) -> Result<Vec<SuiteFile>, FixtureError> {
    let mut plan: Vec<(PathBuf, &'static str, u64, Scenario)> = Vec::new();
    for i in 0..SUITE_BASELINE_BATCHES {
        plan.push((
            dir.join("baseline").join(format!("batch_{i:03}.parquet")),
            "baseline",
            SUITE_BASELINE_START + i,
            Scenario::Clean,
        ));
    }
    for i in 0..SUITE_CLEAN_BATCHES {
        plan.push((
            dir.join("clean").join(format!("clean_{i:03}.parquet")),
            "clean",
            SUITE_CLEAN_START + i,
            Scenario::Clean,
        ));
    }
    for (i, s) in suite_attacks().into_iter().enumerate() {
        plan.push((
            dir.join("attack").join(format!("{}.parquet", s.name())),
            "attack",
            SUITE_ATTACK_START + i as u64,
            s,
        ));
    }
    for (i, s) in suite_drifts().into_iter().enumerate() {
        plan.push((
            dir.join("drift").join(format!("{}.parquet", s.name())),
            "drift",
            SUITE_DRIFT_START + i as u64,
            s,
        ));
    }

    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(plan.len());
    for (path, group, batch_index, scenario) in plan {
        if !names.insert(path.clone()) {
            return Err(FixtureError::InvalidSpec(format!(
                "duplicate suite path {}",
                path.display()
            )));
        }
        let batch = try_generate(&BatchSpec {
            rows,
            seed,
            batch_index,
            scenario: scenario.clone(),
        })?;
        write_parquet(&batch, &path)?;
        out.push(SuiteFile {
            path,
            group,
            scenario,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int8Type, Int32Type, Int64Type, TimestampMicrosecondType};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::collections::HashMap;

    const N: usize = 20_000;

    fn spec(rows: usize, seed: u64, batch_index: u64, scenario: Scenario) -> BatchSpec {
        BatchSpec {
            rows,
            seed,
            batch_index,
            scenario,
        }
    }

    fn gen_with(scenario: Scenario) -> RecordBatch {
        generate(&spec(N, 7, 3, scenario))
    }

    fn clean() -> RecordBatch {
        gen_with(Scenario::Clean)
    }

    fn strs<'a>(b: &'a RecordBatch, col: &str) -> Vec<Option<&'a str>> {
        b.column_by_name(col)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .collect()
    }

    fn labels(b: &RecordBatch) -> Vec<Option<i8>> {
        b.column_by_name("label")
            .unwrap()
            .as_primitive::<Int8Type>()
            .iter()
            .collect()
    }

    fn null_share(b: &RecordBatch, col: &str) -> f64 {
        let c = b.column_by_name(col).unwrap();
        c.null_count() as f64 / c.len() as f64
    }

    /// (rows, positives) per tag.
    fn label_counts(b: &RecordBatch) -> HashMap<String, (usize, usize)> {
        let mut m: HashMap<String, (usize, usize)> = HashMap::new();
        for (t, l) in strs(b, "trust_tag").into_iter().zip(labels(b)) {
            let e = m.entry(t.unwrap().to_string()).or_default();
            e.0 += 1;
            e.1 += usize::from(l == Some(1));
        }
        m
    }

    fn share_of(b: &RecordBatch, col: &str, value: &str) -> f64 {
        let v = strs(b, col);
        v.iter().filter(|x| **x == Some(value)).count() as f64 / v.len() as f64
    }

    /// One string per row (event_time formatted as raw microseconds, since
    /// named time zones need arrow's `chrono-tz` feature to be displayed).
    fn row_strings(b: &RecordBatch) -> Vec<String> {
        let opts = FormatOptions::default().with_null("<null>");
        let cols: Vec<ArrayRef> = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Timestamp(..) => Arc::new(
                    c.as_primitive::<TimestampMicrosecondType>()
                        .clone()
                        .with_timezone_opt(None::<String>),
                ) as ArrayRef,
                _ => c.clone(),
            })
            .collect();
        let fmts: Vec<ArrayFormatter> = cols
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        (0..b.num_rows())
            .map(|i| {
                fmts.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dqmon-fixtures-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn schema_and_column_order() {
        let b = generate(&spec(100, 1, 0, Scenario::Clean));
        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, COLUMNS);
        assert_eq!(b.schema(), schema());
        assert_eq!(
            b.schema().field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let types: Vec<DataType> = b
            .schema_ref()
            .fields()
            .iter()
            .skip(1)
            .map(|f| f.data_type().clone())
            .collect();
        use DataType::*;
        assert_eq!(
            types,
            [
                Int64, Utf8, Float64, Int32, Utf8, Utf8, Utf8, Utf8, Int8, Utf8
            ]
        );
        assert_eq!(b.num_rows(), 100);
    }

    #[test]
    fn vocabularies() {
        assert_eq!(countries().len(), 60);
        assert_eq!(countries().iter().collect::<HashSet<_>>().len(), 60);
        assert!(countries().iter().all(|c| c.len() == 2));
        assert_eq!(merchant_categories().len(), 500);
        assert_eq!(merchant_categories()[0], "mcc_0000");
        assert_eq!(merchant_categories()[499], "mcc_0499");
        assert_eq!(free_text_words().len(), 60);
        assert_eq!(free_text_words().iter().collect::<HashSet<_>>().len(), 60);
        assert!((DEVICE_WEIGHTS.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((TRUST_TAG_WEIGHTS.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((zipf_weights(60, 1.1).iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn deterministic_batches_and_files() {
        let s = spec(5_000, 42, 9, Scenario::Clean);
        let a = generate(&s);
        let b = generate(&s);
        assert_eq!(a, b);
        assert_ne!(a, generate(&spec(5_000, 43, 9, Scenario::Clean)));
        assert_ne!(a, generate(&spec(5_000, 42, 10, Scenario::Clean)));

        let dir = temp_dir("determinism");
        let (p1, p2) = (dir.join("a.parquet"), dir.join("b.parquet"));
        write_parquet(&a, &p1).unwrap();
        write_parquet(&generate(&s), &p2).unwrap();
        let (b1, b2) = (fs::read(&p1).unwrap(), fs::read(&p2).unwrap());
        assert!(!b1.is_empty());
        assert_eq!(b1, b2, "parquet output must be byte-identical");
        // Rewriting in place gives the same bytes and leaves no temp file.
        write_parquet(&a, &p1).unwrap();
        assert_eq!(fs::read(&p1).unwrap(), b1);
        assert!(!tmp_path(&p1).exists());

        // Round trip.
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p1).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let back: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let back = arrow::compute::concat_batches(&schema(), &back).unwrap();
        assert_eq!(back, a);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parquet_properties() {
        let b = generate(&spec(PARQUET_ROW_GROUP_ROWS + 1_000, 5, 0, Scenario::Clean));
        let dir = temp_dir("props");
        let p = dir.join("x.parquet");
        write_parquet(&b, &p).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap()).unwrap();
        let md = builder.metadata();
        assert_eq!(md.file_metadata().created_by(), Some(PARQUET_CREATED_BY));
        assert_eq!(md.num_row_groups(), 2);
        assert_eq!(md.row_group(0).num_rows(), PARQUET_ROW_GROUP_ROWS as i64);
        let col = md.row_group(0).column(0);
        assert_eq!(col.compression(), Compression::SNAPPY);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clean_batch_looks_realistic() {
        let b = clean();
        // event_time: inside the hour of batch 3, non-decreasing.
        let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.null_count(), 0);
        let start = hour_start_micros(3);
        assert_eq!(start, 1_717_200_000_000_000 + 3 * 3_600_000_000);
        assert!(
            t.values()
                .iter()
                .all(|&v| v >= start && v < start + HOUR_MICROS)
        );
        assert!(t.values().windows(2).all(|w| w[0] <= w[1]));
        assert!(t.values()[0] - start < HOUR_MICROS / N as i64);
        assert!(start + HOUR_MICROS - t.values()[N - 1] < 2 * HOUR_MICROS / N as i64);

        // user_id / email.
        let u = b.column(1).as_primitive::<Int64Type>();
        assert!(
            u.values()
                .iter()
                .all(|&v| { (USER_ID_BASE..USER_ID_BASE + (N as i64) * 50).contains(&v) })
        );
        let distinct: HashSet<i64> = u.values().iter().copied().collect();
        assert!(distinct.len() as f64 > 0.95 * N as f64);
        for (id, e) in u.values().iter().zip(strs(&b, "email")) {
            assert_eq!(e.unwrap(), format!("u{id}@example.com"));
        }

        // amount: log-normal(3.5, 1.2), 2 decimals, ~2% nulls.
        assert!((null_share(&b, "amount") - 0.02).abs() < 0.006);
        let a = b.column(3).as_primitive::<Float64Type>();
        let logs: Vec<f64> = a.iter().flatten().map(f64::ln).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let sd = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        assert!((mean - 3.5).abs() < 0.05, "mean {mean}");
        assert!((sd - 1.2).abs() < 0.05, "sd {sd}");
        assert!(
            a.iter()
                .flatten()
                .all(|v| (v * 100.0 - (v * 100.0).round()).abs() < 1e-6)
        );

        // age: 18..=90, ~1% nulls, mean near 38.
        assert!((null_share(&b, "age") - 0.01).abs() < 0.004);
        let ages: Vec<i32> = b
            .column(4)
            .as_primitive::<Int32Type>()
            .iter()
            .flatten()
            .collect();
        assert!(ages.iter().all(|a| (AGE_MIN..=AGE_MAX).contains(a)));
        let mean_age = ages.iter().map(|&a| a as f64).sum::<f64>() / ages.len() as f64;
        assert!((mean_age - 38.5).abs() < 1.0, "mean age {mean_age}");

        // country: Zipf, US the most common, only known codes.
        let cw = zipf_weights(60, COUNTRY_ZIPF_S);
        assert!((share_of(&b, "country", "US") - cw[0]).abs() < 0.015);
        assert!(
            strs(&b, "country")
                .iter()
                .all(|c| countries().contains(&c.unwrap()))
        );

        // device shares.
        for (d, p) in DEVICES.iter().zip(DEVICE_WEIGHTS) {
            assert!((share_of(&b, "device", d) - p).abs() < 0.015, "{d}");
        }

        // merchant category: ~0.5% nulls, Zipf head, known codes.
        assert!((null_share(&b, "merchant_category") - 0.005).abs() < 0.003);
        let mw = zipf_weights(500, MERCHANT_ZIPF_S);
        assert!((share_of(&b, "merchant_category", "mcc_0000") - mw[0]).abs() < 0.01);
        let known: HashSet<&str> = merchant_categories().iter().map(String::as_str).collect();
        assert!(
            strs(&b, "merchant_category")
                .iter()
                .flatten()
                .all(|m| known.contains(m))
        );

        // trust tags and per-tag label rates.
        for (t, p) in TRUST_TAGS.iter().zip(TRUST_TAG_WEIGHTS) {
            assert!((share_of(&b, "trust_tag", t) - p).abs() < 0.015, "{t}");
        }
        let counts = label_counts(&b);
        for (t, rate) in TRUST_TAGS.iter().zip(TAG_LABEL_RATES) {
            let (n, pos) = counts[*t];
            let r = pos as f64 / n as f64;
            assert!((r - rate).abs() < 0.012, "{t}: {r} vs {rate}");
        }
        assert!(labels(&b).iter().all(|l| matches!(l, Some(0 | 1))));

        // free text: 2-6 known words + " #" + order number.
        let vocab: HashSet<&str> = free_text_words().iter().copied().collect();
        for s in strs(&b, "free_text").into_iter().take(2_000) {
            let (words, order) = s.unwrap().split_once(" #").unwrap();
            let ws: Vec<&str> = words.split(' ').collect();
            assert!((2..=6).contains(&ws.len()), "{s:?}");
            assert!(ws.iter().all(|w| vocab.contains(w)));
            assert!(order.parse::<u64>().is_ok());
        }

        // no accidental duplicate rows.
        let rs = row_strings(&b);
        assert_eq!(rs.iter().collect::<HashSet<_>>().len(), rs.len());
    }

    #[test]
    fn label_flip_changes_only_the_target_tag() {
        let base = clean();
        let strength = 0.1;
        let b = gen_with(Scenario::LabelFlip {
            tag: "scraped".into(),
            strength,
        });
        assert_eq!(b.num_rows(), base.num_rows());
        // Everything but the label column is untouched.
        for (i, name) in COLUMNS.iter().enumerate() {
            if *name != "label" {
                assert_eq!(b.column(i), base.column(i), "{name}");
            }
        }
        let (before, after) = (label_counts(&base), label_counts(&b));
        for t in TRUST_TAGS {
            if t != "scraped" {
                assert_eq!(before[t], after[t], "{t}");
            }
        }
        let (n, pos0) = before["scraped"];
        let (_, pos1) = after["scraped"];
        let (r0, r1) = (pos0 as f64 / n as f64, pos1 as f64 / n as f64);
        assert_eq!(pos1 - pos0, share_count(strength, n - pos0));
        assert!((r1 - r0 - strength * (1.0 - r0)).abs() < 1e-3);
        // Only 0 -> 1 flips.
        for (l0, l1) in labels(&base).into_iter().zip(labels(&b)) {
            assert!(l0 == l1 || (l0 == Some(0) && l1 == Some(1)));
        }
    }

    #[test]
    fn planted_category_share_within_tag() {
        let share = 0.05;
        let b = gen_with(Scenario::PlantedCategory {
            column: "merchant_category".into(),
            value: "mcc_9999".into(),
            share,
            tag: Some("user_reported".into()),
        });
        let tags = strs(&b, "trust_tag");
        let mcc = strs(&b, "merchant_category");
        let mut in_tag = 0;
        let mut planted_in_tag = 0;
        for (t, m) in tags.iter().zip(&mcc) {
            let planted = *m == Some("mcc_9999");
            if *t == Some("user_reported") {
                in_tag += 1;
                planted_in_tag += usize::from(planted);
            } else {
                assert!(!planted, "planted outside the tag");
            }
        }
        let got = planted_in_tag as f64 / in_tag as f64;
        assert!((got - share).abs() < 1e-3, "{got}");

        // All tags, other column.
        let b = gen_with(Scenario::PlantedCategory {
            column: "device".into(),
            value: "vr_headset".into(),
            share: 0.2,
            tag: None,
        });
        assert!((share_of(&b, "device", "vr_headset") - 0.2).abs() < 1e-3);
    }

    #[test]
    fn missing_jump_sets_null_share() {
        for (col, share) in [("amount", 0.3), ("country", 0.1), ("label", 0.05)] {
            let b = gen_with(Scenario::MissingJump {
                column: col.into(),
                share,
            });
            assert_eq!(b.num_rows(), N);
            assert!((null_share(&b, col) - share).abs() < 1e-3, "{col}");
        }
        // Other columns keep their natural null share.
        let b = gen_with(Scenario::MissingJump {
            column: "amount".into(),
            share: 0.1,
        });
        assert_eq!(b.column_by_name("age"), clean().column_by_name("age"));
    }

    #[test]
    fn out_of_range_share() {
        let b = gen_with(Scenario::OutOfRange {
            column: "age".into(),
            share: 0.02,
        });
        let ages = b.column(4).as_primitive::<Int32Type>();
        let far = ages.iter().flatten().filter(|&a| a > AGE_MAX).count();
        assert_eq!(far, share_count(0.02, N));
        assert!(
            ages.iter()
                .flatten()
                .all(|a| a <= AGE_MAX || (150..=250).contains(&a))
        );

        let b = gen_with(Scenario::OutOfRange {
            column: "amount".into(),
            share: 0.1,
        });
        let amounts = b.column(3).as_primitive::<Float64Type>();
        let far = amounts.iter().flatten().filter(|&a| a >= 1e6).count();
        assert_eq!(far, share_count(0.1, N));
        assert!(
            amounts
                .iter()
                .flatten()
                .all(|a| a < 1e5 || (1e6..1e7).contains(&a))
        );
    }

    #[test]
    fn tag_flood_reaches_share() {
        let base = clean();
        let b = gen_with(Scenario::TagFlood {
            tag: "user_reported".into(),
            share: 0.6,
            label_rate: 0.2,
        });
        let share = share_of(&b, "trust_tag", "user_reported");
        assert!((share - 0.6).abs() < 1e-3, "{share}");
        let before = label_counts(&base)["user_reported"];
        let after = label_counts(&b)["user_reported"];
        let extra = after.0 - before.0;
        assert_eq!(b.num_rows(), N + extra);
        let extra_rate = (after.1 - before.1) as f64 / extra as f64;
        assert!((extra_rate - 0.2).abs() < 0.02, "{extra_rate}");
        // Other tags unchanged; times still sorted and inside the hour.
        for t in ["human_reviewed", "vendor", "scraped"] {
            assert_eq!(label_counts(&base)[t], label_counts(&b)[t]);
        }
        let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let start = hour_start_micros(3);
        assert!(ts.values().windows(2).all(|w| w[0] <= w[1]));
        assert!(
            ts.values()
                .iter()
                .all(|&v| v >= start && v < start + HOUR_MICROS)
        );
    }

    #[test]
    fn row_spike_multiplies_rows() {
        let b = generate(&spec(2_000, 7, 3, Scenario::RowSpike { factor: 5.0 }));
        assert_eq!(b.num_rows(), 10_000);
        let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let start = hour_start_micros(3);
        assert!(
            ts.values()
                .iter()
                .all(|&v| v >= start && v < start + HOUR_MICROS)
        );
        let b = generate(&spec(2_000, 7, 3, Scenario::RowSpike { factor: 0.5 }));
        assert_eq!(b.num_rows(), 1_000);
    }

    #[test]
    fn duplicate_burst_appends_exact_copies() {
        let n = 5_000;
        let base = generate(&spec(n, 7, 3, Scenario::Clean));
        let b = generate(&spec(n, 7, 3, Scenario::DuplicateBurst { share: 0.3 }));
        let k = share_count(0.3, n);
        assert_eq!(b.num_rows(), n + k);
        assert_eq!(b.slice(0, n), base);
        let rows = row_strings(&b);
        let mut seen = HashSet::new();
        let dups = rows.iter().filter(|r| !seen.insert(*r)).count();
        assert_eq!(dups, k);
        assert_eq!(seen.len(), n);
    }

    #[test]
    fn natural_drift_moves_every_tag() {
        let base = clean();
        let strength = 0.3;
        let b = gen_with(Scenario::NaturalDrift { strength });
        assert_eq!(b.num_rows(), N);
        let mean_log = |b: &RecordBatch| {
            let v: Vec<f64> = b
                .column(3)
                .as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .map(f64::ln)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let shift = mean_log(&b) - mean_log(&base);
        assert!((shift - strength).abs() < 0.01, "{shift}");
        let ios0 = share_of(&base, "device", "mobile_ios");
        let ios1 = share_of(&b, "device", "mobile_ios");
        assert!(ios1 > ios0 + 0.08, "{ios0} -> {ios1}");
        let (c0, c1) = (label_counts(&base), label_counts(&b));
        for t in TRUST_TAGS {
            assert_eq!(c0[t].0, c1[t].0, "tag mix unchanged");
            assert!(c1[t].1 > c0[t].1, "{t} label rate rises");
        }
        let total = |c: &HashMap<String, (usize, usize)>| c.values().map(|x| x.1).sum::<usize>();
        let ratio = total(&c1) as f64 / total(&c0) as f64;
        assert!((ratio - 1.3).abs() < 0.1, "{ratio}");
        // Untouched columns stay identical.
        for name in ["event_time", "user_id", "age", "country", "trust_tag"] {
            assert_eq!(b.column_by_name(name), base.column_by_name(name), "{name}");
        }
    }

    #[test]
    fn drop_column_removes_it() {
        let b = gen_with(Scenario::DropColumn {
            column: "age".into(),
        });
        let names: Vec<String> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let expected: Vec<&str> = COLUMNS.iter().copied().filter(|c| *c != "age").collect();
        assert_eq!(names, expected);
        assert_eq!(b.num_rows(), N);
        assert_eq!(b.column_by_name("amount"), clean().column_by_name("amount"));
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let bad = [
            Scenario::LabelFlip {
                tag: "nope".into(),
                strength: 0.1,
            },
            Scenario::LabelFlip {
                tag: "scraped".into(),
                strength: 1.5,
            },
            Scenario::PlantedCategory {
                column: "device".into(),
                value: "tablet".into(),
                share: 0.1,
                tag: None,
            },
            Scenario::PlantedCategory {
                column: "amount".into(),
                value: "x".into(),
                share: 0.1,
                tag: None,
            },
            Scenario::MissingJump {
                column: "nope".into(),
                share: 0.1,
            },
            Scenario::OutOfRange {
                column: "country".into(),
                share: 0.1,
            },
            Scenario::TagFlood {
                tag: "vendor".into(),
                share: 1.0,
                label_rate: 0.1,
            },
            Scenario::RowSpike { factor: 0.0 },
            Scenario::DuplicateBurst { share: f64::NAN },
            Scenario::NaturalDrift { strength: -0.1 },
            Scenario::DropColumn {
                column: "nope".into(),
            },
        ];
        for s in bad {
            let r = try_generate(&spec(10, 1, 0, s.clone()));
            assert!(
                matches!(r, Err(FixtureError::InvalidSpec(_))),
                "{s:?} accepted"
            );
        }
    }

    #[test]
    fn zero_rows() {
        let b = generate(&spec(0, 1, 0, Scenario::Clean));
        assert_eq!(b.num_rows(), 0);
        assert_eq!(b.schema(), schema());
    }

    #[test]
    fn scenario_names_are_stable() {
        let cases = [
            (Scenario::Clean, "clean"),
            (
                Scenario::LabelFlip {
                    tag: "scraped".into(),
                    strength: 0.05,
                },
                "label_flip_scraped_0.05",
            ),
            (
                Scenario::PlantedCategory {
                    column: "merchant_category".into(),
                    value: "mcc_9999".into(),
                    share: 0.2,
                    tag: Some("user_reported".into()),
                },
                "planted_category_merchant_category_mcc_9999_user_reported_0.2",
            ),
            (
                Scenario::PlantedCategory {
                    column: "device".into(),
                    value: "vr/headset".into(),
                    share: 0.01,
                    tag: None,
                },
                "planted_category_device_vr_headset_all_0.01",
            ),
            (
                Scenario::MissingJump {
                    column: "amount".into(),
                    share: 0.3,
                },
                "missing_jump_amount_0.3",
            ),
            (
                Scenario::OutOfRange {
                    column: "age".into(),
                    share: 0.005,
                },
                "out_of_range_age_0.005",
            ),
            (
                Scenario::TagFlood {
                    tag: "user_reported".into(),
                    share: 0.6,
                    label_rate: 0.2,
                },
                "tag_flood_user_reported_0.6_label_0.2",
            ),
            (Scenario::RowSpike { factor: 5.0 }, "row_spike_5"),
            (
                Scenario::DuplicateBurst { share: 0.3 },
                "duplicate_burst_0.3",
            ),
            (
                Scenario::NaturalDrift { strength: 0.6 },
                "natural_drift_0.6",
            ),
            (
                Scenario::DropColumn {
                    column: "age".into(),
                },
                "drop_column_age",
            ),
        ];
        for (s, name) in cases {
            assert_eq!(s.name(), name);
        }
    }

    #[test]
    fn suite_layout() {
        let dir = temp_dir("suite");
        let files = write_suite(&dir, 300, 11).unwrap();
        let count = |g: &str| files.iter().filter(|f| f.group == g).count();
        assert_eq!(count("baseline"), 20);
        assert_eq!(count("clean"), 10);
        assert_eq!(count("attack"), 18);
        assert_eq!(count("drift"), 3);
        assert_eq!(files.len(), 51);
        assert_eq!(files[0].path, dir.join("baseline/batch_000.parquet"));
        assert_eq!(files[19].path, dir.join("baseline/batch_019.parquet"));
        assert_eq!(files[20].path, dir.join("clean/clean_000.parquet"));
        assert_eq!(files[29].path, dir.join("clean/clean_009.parquet"));
        assert!(
            files
                .iter()
                .any(|f| f.path == dir.join("attack/label_flip_scraped_0.01.parquet"))
        );
        assert!(
            files
                .iter()
                .any(|f| f.path == dir.join("drift/natural_drift_0.3.parquet"))
        );
        for f in &files {
            assert!(f.path.is_file(), "{}", f.path.display());
            assert!(!tmp_path(&f.path).exists());
            let expected_dir = dir.join(f.group);
            assert_eq!(f.path.parent().unwrap(), expected_dir);
        }
        // Attack files hold the spec's batch: index 200 + position.
        let first_attack = &files[30];
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&first_attack.path).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let got: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let expected = generate(&spec(
            300,
            11,
            SUITE_ATTACK_START,
            first_attack.scenario.clone(),
        ));
        assert_eq!(
            arrow::compute::concat_batches(&schema(), &got).unwrap(),
            expected
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// `cargo test --release -- --ignored generation_speed` to check throughput.
    #[test]
    #[ignore = "timing check, run in release"]
    fn generation_speed() {
        let t = std::time::Instant::now();
        let b = generate(&spec(1_000_000, 1, 0, Scenario::Clean));
        let el = t.elapsed();
        assert_eq!(b.num_rows(), 1_000_000);
        eprintln!("1M rows in {el:?}");
        assert!(el.as_secs_f64() < 2.0);
    }
}
