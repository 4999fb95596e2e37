//! The metrics writer on a real store (SQLite, and PostgreSQL when configured): a flush takes at
//! most `flush_max` samples in arrival order and stores them with one insert, replays are not
//! stored or handed on twice, every sink gets each committed flush, late samples land in their
//! finished rollup bucket, a maintenance tick rolls up closed buckets, and a flush the database
//! fails (locked, or its connection cut) is retried without losing a sample within the intake's
//! capacity.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reap3r_actors::metrics::{
    AgentSample, Metric, MetricsIntake, MetricsSettings, MetricsWriterArgs, SampleSink, SeriesValue,
};
use reap3r_actors::*;
use reap3r_store::{MetricLevel, Uuid};
use reap3r_testkit::{TestDatabase, WriteOutage};

/// A day boundary (1 m and 5 m buckets start here too).
const T0: i64 = 1_699_920_000_000;

#[derive(Default)]
struct Recorder(Mutex<Vec<usize>>);

impl SampleSink for Recorder {
    fn samples_committed(&self, batch: Arc<[AgentSample]>) {
        self.0.lock().unwrap().push(batch.len());
    }
}

fn sample(org: Uuid, agent: Uuid, at: i64, cpu: f64) -> AgentSample {
    AgentSample {
        agent_id: agent,
        org_id: org,
        taken_at_ms: at,
        values: vec![SeriesValue {
            metric: Metric::CpuPercent,
            label: String::new(),
            value: cpu,
        }],
    }
}

async fn writer(
    db: &TestDatabase,
    flush_max: usize,
    capacity: usize,
) -> (MetricsWriterArgs, Arc<Recorder>, ManualClock) {
    let store = db.open().await.unwrap();
    let clock = ManualClock::new(T0 as u64);
    let recorder = Arc::new(Recorder::default());
    let settings = MetricsSettings {
        flush_max,
        intake_capacity: capacity,
        ..MetricsSettings::default()
    };
    let args = MetricsWriterArgs {
        store,
        clock: Arc::new(clock.clone()),
        intake: MetricsIntake::new(settings.intake_capacity, settings.flush_max),
        settings,
        sinks: vec![recorder.clone()],
        stats: Arc::new(FleetStats::default()),
    };
    (args, recorder, clock)
}

#[tokio::test]
async fn flushes_are_batched_bounded_and_handed_to_sinks_once() {
    for db in TestDatabase::all().await.unwrap() {
        let (w, recorder, _clock) = writer(&db, 100, 250).await;
        let org = w.store.default_org(0).await.unwrap().id;
        let agent = Uuid::new_v4();
        // 300 offered, 250 fit: 50 dropped and counted.
        let queued = w
            .intake
            .offer((0..300).map(|i| sample(org, agent, T0 + i * 1000, i as f64)));
        assert_eq!((queued, w.intake.dropped()), (250, 50));
        assert_eq!(w.flush().await, 100);
        assert_eq!(w.flush().await, 100);
        assert_eq!(w.flush().await, 50);
        assert_eq!(w.flush().await, 0);
        assert_eq!(*recorder.0.lock().unwrap(), vec![100, 100, 50]);
        assert_eq!(w.stats.metrics_flushes.load(Ordering::Relaxed), 3);
        assert_eq!(w.stats.metrics_stored.load(Ordering::Relaxed), 250);
        assert_eq!(w.stats.metrics_dropped.load(Ordering::Relaxed), 50);
        let rows = w
            .store
            .metric_rows(org, agent, MetricLevel::Raw, 0, i64::MAX, 1000)
            .await
            .unwrap();
        assert_eq!(rows.len(), 250);
        assert_eq!(rows[249].series[0].last, 249.0);
        // A replay (the agent resends after a reconnect) is not stored nor handed on again.
        w.intake
            .offer((0..10).map(|i| sample(org, agent, T0 + i * 1000, 0.0)));
        assert_eq!(w.flush().await, 10);
        assert_eq!(recorder.0.lock().unwrap().len(), 3);
        assert_eq!(w.stats.metrics_stored.load(Ordering::Relaxed), 250);
    }
}

#[tokio::test]
async fn maintenance_rolls_up_and_late_samples_join_finished_buckets() {
    for db in TestDatabase::all().await.unwrap() {
        let (w, _recorder, clock) = writer(&db, 1000, 10_000).await;
        let org = w.store.default_org(0).await.unwrap().id;
        let agent = Uuid::new_v4();
        // The first tick sets the marks at the current time.
        w.maintain().await.unwrap();
        w.intake.offer([
            sample(org, agent, T0 + 1_000, 10.0),
            sample(org, agent, T0 + 61_000, 30.0),
        ]);
        w.flush().await;
        clock.advance(3 * 60_000);
        w.maintain().await.unwrap();
        let minute = |w: &MetricsWriterArgs| {
            let store = w.store.clone();
            async move {
                store
                    .metric_rows(org, agent, MetricLevel::Minute, 0, i64::MAX, 100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.at_ms, r.series[0].count, r.series[0].max))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            minute(&w).await,
            vec![(T0, 1, 10.0), (T0 + 60_000, 1, 30.0)]
        );
        // A buffered sample of minute 0 arrives now: merged into the finished bucket.
        w.intake.offer([sample(org, agent, T0 + 2_000, 50.0)]);
        w.flush().await;
        assert_eq!(
            minute(&w).await,
            vec![(T0, 2, 50.0), (T0 + 60_000, 1, 30.0)]
        );
        assert_eq!(w.stats.metrics_late_buckets.load(Ordering::Relaxed), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_the_database_fails_is_retried_and_only_overflow_is_lost() {
    for db in TestDatabase::all().await.unwrap() {
        let (w, recorder, _clock) = writer(&db, 5, 10).await;
        let org = w.store.default_org(0).await.unwrap().id;
        let agent = Uuid::new_v4();
        w.intake
            .offer((0..8).map(|i| sample(org, agent, T0 + i * 1000, i as f64)));

        // The database becomes unavailable to writers while a flush is under way.
        let mut outage = WriteOutage::begin(&db, "metric_samples").await.unwrap();
        let flushing = tokio::spawn({
            let w = w.clone();
            async move { w.flush().await }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.intake.len() != 3 {
            assert!(
                Instant::now() < deadline,
                "the flush did not take its batch"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Samples keep arriving meanwhile: 3 + 4 queued, and the failed 5 put back make 12,
        // past the capacity of 10.
        w.intake
            .offer((8..12).map(|i| sample(org, agent, T0 + i * 1000, i as f64)));
        // SQLite's writer gives up after busy_timeout; PostgreSQL's connection is cut.
        while !flushing.is_finished() {
            outage.cut_waiters().await.unwrap();
            assert!(
                Instant::now() < deadline,
                "the flush neither failed nor finished"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(flushing.await.unwrap(), 0, "{}", db.url);
        assert_eq!(w.stats.metrics_flush_failures.load(Ordering::Relaxed), 1);
        assert_eq!(w.stats.metrics_lost.load(Ordering::Relaxed), 2);
        assert_eq!(w.intake.len(), 10);
        assert!(recorder.0.lock().unwrap().is_empty());

        // Back up: the retried batch goes first, everything kept is stored and handed on once.
        outage.end().await.unwrap();
        assert_eq!(w.flush().await, 5);
        assert_eq!(w.flush().await, 5);
        assert_eq!(w.flush().await, 0);
        assert_eq!(*recorder.0.lock().unwrap(), vec![5, 5]);
        let rows = w
            .store
            .metric_rows(org, agent, MetricLevel::Raw, 0, i64::MAX, 100)
            .await
            .unwrap();
        let stored: Vec<f64> = rows.iter().map(|r| r.series[0].last).collect();
        // The two newest (10 and 11) did not fit when the batch was put back.
        assert_eq!(stored, (0..10).map(f64::from).collect::<Vec<_>>());
        assert_eq!(w.stats.metrics_stored.load(Ordering::Relaxed), 10);
        assert_eq!(w.stats.metrics_flush_failures.load(Ordering::Relaxed), 1);
    }
}
