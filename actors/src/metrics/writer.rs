//! The metrics writer: a child of the root supervisor that drains the [`MetricsIntake`] on a
//! timer (or when a flush's worth waits) into ONE multi-row insert per flush, merges late samples
//! into finished rollup buckets in the same transaction, hands the committed samples to every
//! [`SampleSink`], and runs the incremental rollup passes and the chunked expiry. A flush the
//! database fails (it is down or locked for a while) puts its batch back at the head of the
//! intake for the next timer flush: samples are only lost past the intake's capacity.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use reap3r_store::{MetricLevel, NewSample, Store, StoreError};
use tracing::warn;

use super::catalog::{AgentSample, SampleSink};
use super::ingest::{MetricsSettings, new_sample};
use super::intake::MetricsIntake;
use crate::{Clock, FleetStats};

/// Rollup buckets a level's pass covers at most, finest level first (1 m, 5 m, 1 h, 1 d): a
/// pass after a long stop catches up in steps instead of one huge transaction.
const MAX_BUCKETS_PER_PASS: [i64; 4] = [10, 6, 2, 1];
/// Passes (and expiry chunks) per level per maintenance tick.
const STEPS_PER_TICK: usize = 4;
/// Time span deleted per expiry chunk: raw, then 1 m, 5 m, 1 h, 1 d.
const EXPIRY_CHUNK_MS: [i64; 5] = [30_000, 120_000, 600_000, 7_200_000, 172_800_000];

#[derive(Debug)]
pub enum MetricsMsg {
    /// Write what the intake holds (a timer, or a nudge when a flush's worth waits).
    Flush,
    /// Rollup passes and expiry.
    Maintain,
}

/// What the writer is started with.
#[derive(Clone)]
pub struct MetricsWriterArgs {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub settings: MetricsSettings,
    pub intake: MetricsIntake,
    pub sinks: Vec<Arc<dyn SampleSink>>,
    pub stats: Arc<FleetStats>,
}

#[derive(Debug)]
pub struct MetricsWriter;

impl MetricsWriter {
    pub async fn spawn_linked(
        args: MetricsWriterArgs,
        parent: ractor::ActorCell,
    ) -> Result<ActorRef<MetricsMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn_linked(None, MetricsWriter, args, parent).await?;
        Ok(actor)
    }

    /// Starts the writer on its own (tests without a node).
    pub async fn start(args: MetricsWriterArgs) -> Result<ActorRef<MetricsMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(None, MetricsWriter, args).await?;
        Ok(actor)
    }
}

impl MetricsWriterArgs {
    /// One flush: up to `flush_max` samples, one INSERT, late merges, one commit, then sinks.
    /// Returns how many samples it took from the intake (0 when empty or when it failed).
    pub async fn flush(&self) -> usize {
        let batch = self.intake.take(self.settings.flush_max);
        // The intake counts its own drops and refusals; the exported counters follow them here.
        self.stats
            .metrics_dropped
            .store(self.intake.dropped(), Ordering::Relaxed);
        self.stats
            .metrics_refused
            .store(self.intake.refused(), Ordering::Relaxed);
        if batch.is_empty() {
            return 0;
        }
        let rows: Vec<NewSample> = batch.iter().map(new_sample).collect();
        match self.write(&rows).await {
            Ok(stored) => {
                self.stats.metrics_flushes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .metrics_stored
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                if !stored.is_empty() && !self.sinks.is_empty() {
                    let committed: Arc<[AgentSample]> =
                        stored.iter().map(|i| batch[*i].clone()).collect();
                    for sink in &self.sinks {
                        sink.samples_committed(committed.clone());
                    }
                }
                batch.len()
            }
            Err(err) => {
                self.stats
                    .metrics_flush_failures
                    .fetch_add(1, Ordering::Relaxed);
                let samples = batch.len();
                // The database failed, so the batch is kept for the next flush (the insert skips
                // what a commit that failed after all did store). Anything else is about the
                // data itself and would fail again: it is dropped.
                let lost = match err {
                    StoreError::Database(_) => self.intake.requeue(batch),
                    _ => samples,
                };
                self.stats
                    .metrics_lost
                    .fetch_add(lost as u64, Ordering::Relaxed);
                warn!(%err, samples, lost, "metrics flush failed; the samples kept are retried");
                0
            }
        }
    }

    async fn write(&self, rows: &[NewSample]) -> reap3r_store::Result<Vec<usize>> {
        let mut tx = self.store.begin().await?;
        let stored = tx.insert_metric_samples(rows).await?;
        let marks = tx.metric_rollup_marks().await?;
        for level in MetricLevel::ROLLUPS {
            let Some(mark) = marks.get(&level) else {
                continue;
            };
            // Older than the level's mark: no pass will read it, so merge it now.
            let late: Vec<&NewSample> = stored
                .iter()
                .map(|i| &rows[*i])
                .filter(|s| s.taken_at_ms < *mark)
                .collect();
            if !late.is_empty() {
                let n = tx.merge_late_metric_samples(level, &late).await?;
                self.stats
                    .metrics_late_buckets
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Rollup passes for every level (finest first, so a coarser one sees its source's
    /// progress), then expiry of every level, each in bounded steps.
    pub async fn maintain(&self) -> reap3r_store::Result<()> {
        let now = self.clock.now_ms() as i64;
        let closed_before = now - self.settings.rollup_delay_ms;
        for (i, level) in MetricLevel::ROLLUPS.into_iter().enumerate() {
            for _ in 0..STEPS_PER_TICK {
                let mut tx = self.store.begin().await?;
                let pass = tx
                    .roll_up_metrics(level, closed_before, MAX_BUCKETS_PER_PASS[i])
                    .await?;
                tx.commit().await?;
                self.stats
                    .metrics_rollup_rows
                    .fetch_add(pass.buckets_written, Ordering::Relaxed);
                if !pass.behind {
                    break;
                }
            }
        }
        let retention = std::iter::once(self.settings.raw_retention_ms)
            .chain(self.settings.rollup_retention_ms);
        for ((level, keep), chunk) in MetricLevel::ALL
            .into_iter()
            .zip(retention)
            .zip(EXPIRY_CHUNK_MS)
        {
            for _ in 0..STEPS_PER_TICK {
                let mut tx = self.store.begin().await?;
                let n = tx.expire_metrics(level, now - keep, chunk).await?;
                tx.commit().await?;
                self.stats
                    .metrics_expired_rows
                    .fetch_add(n, Ordering::Relaxed);
                if n == 0 {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl Actor for MetricsWriter {
    type Msg = MetricsMsg;
    type State = MetricsWriterArgs;
    type Arguments = MetricsWriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MetricsMsg>,
        args: MetricsWriterArgs,
    ) -> Result<MetricsWriterArgs, ActorProcessingErr> {
        args.intake.writer_slot().set(myself.clone());
        myself.send_interval(
            Duration::from_millis(args.settings.flush_interval_ms.max(10)),
            || MetricsMsg::Flush,
        );
        myself.send_interval(
            Duration::from_millis(args.settings.maintain_interval_ms.max(10)),
            || MetricsMsg::Maintain,
        );
        // At once: the first passes set the rollup marks before samples arrive.
        myself.cast(MetricsMsg::Maintain)?;
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<MetricsMsg>,
        msg: MetricsMsg,
        state: &mut MetricsWriterArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MetricsMsg::Flush => {
                state.flush().await;
            }
            MetricsMsg::Maintain => {
                if let Err(err) = state.maintain().await {
                    warn!(%err, "metrics rollup or expiry failed; next tick retries");
                }
            }
        }
        Ok(())
    }

    /// Stopping (shutdown, or a restart) writes what is still queued.
    async fn post_stop(
        &self,
        _myself: ActorRef<MetricsMsg>,
        state: &mut MetricsWriterArgs,
    ) -> Result<(), ActorProcessingErr> {
        while state.flush().await > 0 {}
        Ok(())
    }
}
