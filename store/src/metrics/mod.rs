//! Agent metrics: raw samples (one row per sample, its series packed), rollups at 1 m, 5 m, 1 h
//! and 1 d with min/avg/max/last/count, incremental rollup passes behind a mark per level, and
//! expiry in bounded chunks of an indexed time range.
//!
//! The store knows series only as a metric *code* (a `u8` the domain maps to its catalog) and a
//! label; all arithmetic on values happens here in Rust, so there is no SQL whose meaning could
//! differ between SQLite and PostgreSQL (no LEAST/GREATEST, no aggregate over blobs).

mod codec;
mod read;
mod rollup;
mod size;
mod write;

pub use read::{FleetFilter, LatestSample, SeriesRow};
pub use rollup::RollupPass;
pub use size::MetricStorage;

use uuid::Uuid;

/// A storage level: raw samples, or one of the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricLevel {
    Raw,
    Minute,
    FiveMinutes,
    Hour,
    Day,
}

impl MetricLevel {
    /// Finest first.
    pub const ALL: [MetricLevel; 5] = [
        Self::Raw,
        Self::Minute,
        Self::FiveMinutes,
        Self::Hour,
        Self::Day,
    ];
    pub const ROLLUPS: [MetricLevel; 4] = [Self::Minute, Self::FiveMinutes, Self::Hour, Self::Day];

    /// Bucket width in ms (0 for raw samples); also the `level` column of `metric_rollups`.
    pub fn width_ms(self) -> i64 {
        match self {
            Self::Raw => 0,
            Self::Minute => 60_000,
            Self::FiveMinutes => 300_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Minute => "1m",
            Self::FiveMinutes => "5m",
            Self::Hour => "1h",
            Self::Day => "1d",
        }
    }

    /// What a rollup pass of this level reads: raw samples for 1 m, the next finer rollup above.
    pub fn source(self) -> Option<MetricLevel> {
        match self {
            Self::Raw => None,
            Self::Minute => Some(Self::Raw),
            Self::FiveMinutes => Some(Self::Minute),
            Self::Hour => Some(Self::FiveMinutes),
            Self::Day => Some(Self::Hour),
        }
    }

    /// The start of the bucket holding `at_ms` (raw: `at_ms` itself).
    pub fn bucket_of(self, at_ms: i64) -> i64 {
        let w = self.width_ms();
        if w == 0 {
            at_ms
        } else {
            at_ms.div_euclid(w) * w
        }
    }
}

/// One value of one series in a sample to store. `code` is the domain's metric code.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub code: u8,
    pub label: String,
    pub value: f64,
}

/// A verified sample for [`crate::Tx::insert_metric_samples`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewSample {
    pub org_id: Uuid,
    pub agent_id: Uuid,
    pub taken_at_ms: i64,
    pub points: Vec<Point>,
}

/// One series over a bucket (or one raw value, with `count` 1): what rollups keep and merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub code: u8,
    pub label: String,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last: f64,
    /// When `last` was taken: merging keeps the later one, whatever order values come in.
    pub last_at: i64,
}

impl Agg {
    pub fn of(point: &Point, at_ms: i64) -> Self {
        Self {
            code: point.code,
            label: point.label.clone(),
            count: 1,
            min: point.value,
            max: point.value,
            sum: point.value,
            last: point.value,
            last_at: at_ms,
        }
    }

    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Folds `other` (the same series) in: associative and commutative, so buckets can be
    /// merged in any order and late samples merged into a finished bucket.
    pub fn merge(&mut self, other: &Agg) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        if other.last_at >= self.last_at {
            self.last = other.last;
            self.last_at = other.last_at;
        }
    }
}

/// Merges `from` into `into`, series by series (code and label).
pub fn merge_series(into: &mut Vec<Agg>, from: &[Agg]) {
    for agg in from {
        match into
            .iter_mut()
            .find(|a| a.code == agg.code && a.label == agg.label)
        {
            Some(existing) => existing.merge(agg),
            None => into.push(agg.clone()),
        }
    }
}
