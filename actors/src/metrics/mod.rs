//! Agent metrics: the catalog of metric names, the samples agents send, their bounded intake,
//! the writer that stores them in batches and runs rollups and retention, and the queries.

mod catalog;
mod ingest;
mod intake;
mod query;
mod writer;

pub use catalog::{AgentSample, MAX_LABEL_LEN, Metric, SampleSink, SeriesValue, UnknownMetric};
pub use ingest::{
    DEFAULT_FLUSH_MAX, DEFAULT_INTAKE_CAPACITY, MAX_FUTURE_SKEW_MS, MetricsSettings, Refused,
    admit, agent_sample, from_code, new_sample, series_of,
};
pub use intake::MetricsIntake;
pub use query::*;
pub use writer::{MetricsMsg, MetricsWriter, MetricsWriterArgs};
