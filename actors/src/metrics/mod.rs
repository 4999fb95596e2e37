//! Agent metrics: the catalog of metric names, the samples agents send, and (built in this
//! folder) their batched ingestion, rollups, retention and queries.

mod catalog;

pub use catalog::{AgentSample, MAX_LABEL_LEN, Metric, SampleSink, SeriesValue, UnknownMetric};
