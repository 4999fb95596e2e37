//! Metrics storage on every available backend: the batched insert (replays skipped), rollups
//! across bucket edges (min/avg/max/last/count), incremental passes that read only new rows,
//! late samples merged into finished buckets, expiry in bounded chunks, and fleet reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use reap3r_store::{
    AgentPlacement, FleetFilter, GroupKind, MetricLevel, NewAgent, NewEnrolmentToken, NewGroup,
    NewSample, Point, Store, Uuid,
};

mod support;
use support::*;

/// A day boundary (so also a 1 m, 5 m and 1 h one): bucket edges are easy to read.
const DAY0: i64 = 1_699_920_000_000;
const MIN: i64 = 60_000;

async fn agent(store: &Store, org: Uuid, hostname: &str) -> Result<Uuid> {
    let hash = hash_of(&format!("secret-{hostname}"));
    create_enrolment_token(
        store,
        &NewEnrolmentToken {
            org_id: org,
            token_hash: hash.clone(),
            label: None,
            expires_at: None,
            max_uses: None,
            require_approval: false,
            created_by: None,
        },
        DAY0,
    )
    .await?;
    let new = NewAgent {
        hostname: hostname.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
    };
    Ok(enrol_agent(store, &hash, &new, DAY0).await?.id)
}

/// Series code 0 (no label) with `cpu`, code 9 on "/" with `disk`.
fn sample(org: Uuid, agent: Uuid, at: i64, cpu: f64, disk: f64) -> NewSample {
    NewSample {
        org_id: org,
        agent_id: agent,
        taken_at_ms: at,
        points: vec![
            Point {
                code: 0,
                label: String::new(),
                value: cpu,
            },
            Point {
                code: 9,
                label: "/".into(),
                value: disk,
            },
        ],
    }
}

async fn insert(store: &Store, samples: &[NewSample]) -> Result<Vec<usize>> {
    let mut tx = store.begin().await?;
    let stored = tx.insert_metric_samples(samples).await?;
    tx.commit().await?;
    Ok(stored)
}

async fn pass(
    store: &Store,
    level: MetricLevel,
    closed_before: i64,
) -> Result<reap3r_store::RollupPass> {
    let mut tx = store.begin().await?;
    let done = tx.roll_up_metrics(level, closed_before, 100).await?;
    tx.commit().await?;
    Ok(done)
}

/// (count, min, avg, max, last) of code 0 in each row of `level` for `agent`.
async fn cpu_rows(
    store: &Store,
    org: Uuid,
    agent: Uuid,
    level: MetricLevel,
) -> Result<Vec<(i64, u64, f64, f64, f64, f64)>> {
    Ok(store
        .metric_rows(org, agent, level, 0, i64::MAX, 1000)
        .await?
        .into_iter()
        .map(|r| {
            let a = r.series.iter().find(|a| a.code == 0).unwrap().clone();
            (r.at_ms, a.count, a.min, a.avg(), a.max, a.last)
        })
        .collect())
}

#[tokio::test]
async fn batched_insert_skips_replays_and_duplicates() -> Result<()> {
    for (_db, store) in stores().await? {
        let org = create_org(&store, "m", DAY0).await?.id;
        let a = agent(&store, org, "ins").await?;
        let batch = vec![
            sample(org, a, DAY0, 1.0, 10.0),
            sample(org, a, DAY0 + 10_000, 2.0, 10.0),
            sample(org, a, DAY0, 9.0, 10.0),
        ];
        assert_eq!(
            insert(&store, &batch).await?,
            vec![0, 1],
            "[{}]",
            store.backend()
        );
        // The agent replays after a reconnect: nothing is stored twice.
        assert_eq!(insert(&store, &batch[..2]).await?, Vec::<usize>::new());
        let rows = store
            .metric_rows(org, a, MetricLevel::Raw, DAY0, DAY0 + MIN, 10)
            .await?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].series[0].last, 1.0);
        assert_eq!(rows[0].series[1].label, "/");
        // Another org sees nothing.
        let other = create_org(&store, "other", DAY0).await?.id;
        assert!(
            store
                .metric_rows(other, a, MetricLevel::Raw, 0, i64::MAX, 10)
                .await?
                .is_empty()
        );
    }
    Ok(())
}

#[tokio::test]
async fn rollups_are_exact_across_bucket_edges_and_incremental() -> Result<()> {
    for (_db, store) in stores().await? {
        let b = store.backend();
        let org = create_org(&store, "m", DAY0).await?.id;
        let a = agent(&store, org, "roll").await?;
        // First passes only set the marks at DAY0.
        for level in MetricLevel::ROLLUPS {
            pass(&store, level, DAY0).await?;
        }
        // Minute 0: 10 @0s, 30 @30s, 20 @59.999s; minute 1: 50 @60s (on the edge), 40 @119s.
        insert(
            &store,
            &[
                sample(org, a, DAY0, 10.0, 1.0),
                sample(org, a, DAY0 + 30_000, 30.0, 2.0),
                sample(org, a, DAY0 + MIN - 1, 20.0, 3.0),
                sample(org, a, DAY0 + MIN, 50.0, 4.0),
                sample(org, a, DAY0 + 2 * MIN - 1_000, 40.0, 5.0),
            ],
        )
        .await?;
        // Only minute 0 is closed at DAY0 + 1m + 30s.
        let first = pass(&store, MetricLevel::Minute, DAY0 + MIN + 30_000).await?;
        assert_eq!(
            (first.rows_read, first.buckets_written, first.done_until),
            (3, 1, DAY0 + MIN),
            "[{b}]"
        );
        assert_eq!(
            cpu_rows(&store, org, a, MetricLevel::Minute).await?,
            vec![(DAY0, 3, 10.0, 20.0, 30.0, 20.0)],
            "[{b}]"
        );
        // The second pass reads only minute 1's rows, not minute 0's again.
        let second = pass(&store, MetricLevel::Minute, DAY0 + 5 * MIN).await?;
        assert_eq!((second.rows_read, second.buckets_written), (2, 1), "[{b}]");
        // Nothing new: a pass reads nothing.
        let third = pass(&store, MetricLevel::Minute, DAY0 + 5 * MIN).await?;
        assert_eq!(third.rows_read, 0, "[{b}]");
        assert_eq!(
            cpu_rows(&store, org, a, MetricLevel::Minute).await?,
            vec![
                (DAY0, 3, 10.0, 20.0, 30.0, 20.0),
                (DAY0 + MIN, 2, 40.0, 45.0, 50.0, 40.0)
            ],
            "[{b}]"
        );
        // 5 m from the 1 m rows: the bucket [DAY0 - 40s .. ) holding both minutes.
        let five = MetricLevel::FiveMinutes;
        let p5 = pass(&store, five, DAY0 + 10 * MIN).await?;
        assert_eq!(p5.rows_read, 2, "[{b}]");
        let rows = cpu_rows(&store, org, a, five).await?;
        assert_eq!(rows.len(), 1, "[{b}]");
        let (at, count, min, avg, max, last) = rows[0];
        assert_eq!(
            (at, count, min, max, last),
            (five.bucket_of(DAY0), 5, 10.0, 50.0, 40.0),
            "[{b}]"
        );
        assert!((avg - 30.0).abs() < 1e-9, "[{b}] avg {avg}");
        // 1 h cannot pass 5 m's mark.
        let h = pass(&store, MetricLevel::Hour, DAY0 + 100 * MIN).await?;
        assert!(
            h.done_until <= MetricLevel::Hour.bucket_of(p5.done_until),
            "[{b}]"
        );
    }
    Ok(())
}

#[tokio::test]
async fn late_samples_merge_into_finished_buckets() -> Result<()> {
    for (_db, store) in stores().await? {
        let b = store.backend();
        let org = create_org(&store, "m", DAY0).await?.id;
        let a = agent(&store, org, "late").await?;
        for level in MetricLevel::ROLLUPS {
            pass(&store, level, DAY0).await?;
        }
        insert(&store, &[sample(org, a, DAY0 + 1_000, 10.0, 1.0)]).await?;
        pass(&store, MetricLevel::Minute, DAY0 + 3 * MIN).await?;
        // A sample of minute 0 arrives after its pass (an agent back from an outage).
        let late = sample(org, a, DAY0 + 2_000, 70.0, 1.0);
        let stored = insert(&store, std::slice::from_ref(&late)).await?;
        assert_eq!(stored, vec![0]);
        let mut tx = store.begin().await?;
        let marks = tx.metric_rollup_marks().await?;
        assert_eq!(marks[&MetricLevel::Minute], DAY0 + 3 * MIN);
        assert_eq!(
            tx.merge_late_metric_samples(MetricLevel::Minute, &[&late])
                .await?,
            1
        );
        tx.commit().await?;
        assert_eq!(
            cpu_rows(&store, org, a, MetricLevel::Minute).await?,
            vec![(DAY0, 2, 10.0, 40.0, 70.0, 70.0)],
            "[{b}]"
        );
        // An older-than-last late value does not become `last`.
        let older = sample(org, a, DAY0, 5.0, 1.0);
        insert(&store, std::slice::from_ref(&older)).await?;
        let mut tx = store.begin().await?;
        tx.merge_late_metric_samples(MetricLevel::Minute, &[&older])
            .await?;
        tx.commit().await?;
        assert_eq!(
            cpu_rows(&store, org, a, MetricLevel::Minute).await?,
            vec![(DAY0, 3, 5.0, 85.0 / 3.0, 70.0, 70.0)],
            "[{b}]"
        );
    }
    Ok(())
}

#[tokio::test]
async fn expiry_deletes_bounded_chunks_below_the_cutoff() -> Result<()> {
    for (_db, store) in stores().await? {
        let b = store.backend();
        let org = create_org(&store, "m", DAY0).await?.id;
        let a = agent(&store, org, "exp").await?;
        let samples: Vec<_> = (0..10)
            .map(|i| sample(org, a, DAY0 + i * MIN, 1.0, 1.0))
            .collect();
        insert(&store, &samples).await?;
        let expire = |cutoff: i64, chunk: i64| {
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let n = tx.expire_metrics(MetricLevel::Raw, cutoff, chunk).await?;
                tx.commit().await?;
                anyhow::Ok(n)
            }
        };
        // Cutoff after 6 samples, chunks of 2 minutes: 2, 2, 2, then nothing.
        let cutoff = DAY0 + 6 * MIN;
        assert_eq!(expire(cutoff, 2 * MIN).await?, 2, "[{b}]");
        assert_eq!(expire(cutoff, 2 * MIN).await?, 2, "[{b}]");
        assert_eq!(expire(cutoff, 2 * MIN).await?, 2, "[{b}]");
        assert_eq!(expire(cutoff, 2 * MIN).await?, 0, "[{b}]");
        let left = store
            .metric_rows(org, a, MetricLevel::Raw, 0, i64::MAX, 100)
            .await?;
        assert_eq!(left.first().map(|r| r.at_ms), Some(cutoff), "[{b}]");
        assert_eq!(left.len(), 4, "[{b}]");
    }
    Ok(())
}

#[tokio::test]
async fn fleet_reads_the_latest_sample_per_agent_filtered_by_folder_and_tag() -> Result<()> {
    for (_db, store) in stores().await? {
        let b = store.backend();
        let org = create_org(&store, "m", DAY0).await?.id;
        let (x, y) = (
            agent(&store, org, "x").await?,
            agent(&store, org, "y").await?,
        );
        insert(
            &store,
            &[
                sample(org, x, DAY0, 10.0, 1.0),
                sample(org, x, DAY0 + MIN, 90.0, 1.0),
                sample(org, y, DAY0, 50.0, 1.0),
            ],
        )
        .await?;
        let group = |name: &str| NewGroup {
            name: name.into(),
            description: None,
            parent_id: None,
        };
        let folder = create_group(&store, GroupKind::Folder, org, &group("f"), DAY0)
            .await?
            .id;
        let tag = create_group(&store, GroupKind::Tag, org, &group("t"), DAY0)
            .await?
            .id;
        move_agent(
            &store,
            org,
            y,
            &AgentPlacement {
                folder_id: Some(Some(folder)),
                site_id: None,
                company_id: None,
            },
        )
        .await?;
        tag_agent(&store, org, x, tag).await?;
        let latest = |filter: FleetFilter| {
            let store = store.clone();
            async move {
                let mut got: Vec<_> = store
                    .latest_metric_samples(org, &filter, 0)
                    .await?
                    .into_iter()
                    .map(|l| (l.hostname, l.taken_at_ms, l.series[0].last))
                    .collect();
                got.sort_by(|a, b| a.0.cmp(&b.0));
                anyhow::Ok(got)
            }
        };
        assert_eq!(
            latest(FleetFilter::default()).await?,
            vec![("x".into(), DAY0 + MIN, 90.0), ("y".into(), DAY0, 50.0)],
            "[{b}]"
        );
        assert_eq!(
            latest(FleetFilter {
                folder_id: Some(folder),
                tag_id: None
            })
            .await?,
            vec![("y".into(), DAY0, 50.0)],
            "[{b}]"
        );
        assert_eq!(
            latest(FleetFilter {
                folder_id: None,
                tag_id: Some(tag)
            })
            .await?,
            vec![("x".into(), DAY0 + MIN, 90.0)],
            "[{b}]"
        );
        let other = create_org(&store, "other", DAY0).await?.id;
        assert!(
            store
                .latest_metric_samples(other, &FleetFilter::default(), 0)
                .await?
                .is_empty()
        );
    }
    Ok(())
}

#[tokio::test]
async fn storage_counts_rows_per_level_and_grows_with_them() -> Result<()> {
    for (_db, store) in stores().await? {
        let b = store.backend();
        let empty = store.metric_storage().await?;
        assert!(empty.rows.iter().all(|(_, n)| *n == 0), "[{b}] {empty:?}");
        let org = create_org(&store, "size", DAY0).await?.id;
        let a = agent(&store, org, "size").await?;
        for level in MetricLevel::ROLLUPS {
            pass(&store, level, DAY0).await?;
        }
        // Two hours of one sample every 10 s.
        let samples: Vec<NewSample> = (0..720)
            .map(|i| sample(org, a, DAY0 + i * 10_000, i as f64, 1.0))
            .collect();
        for chunk in samples.chunks(500) {
            insert(&store, chunk).await?;
        }
        let raw = store.metric_storage().await?;
        assert_eq!(raw.rows_of(MetricLevel::Raw), 720, "[{b}]");
        assert!(raw.raw_bytes > empty.raw_bytes, "[{b}] {raw:?}");
        let mut last = raw.rollup_bytes;
        for (level, rows) in [(MetricLevel::Minute, 120), (MetricLevel::FiveMinutes, 24)] {
            while pass(&store, level, DAY0 + 120 * MIN).await?.behind {}
            let now = store.metric_storage().await?;
            assert_eq!(now.rows_of(level), rows, "[{b}] {level:?}");
            // Page-granular sizes: 120 rows need new pages, 24 more may fit in free space.
            if level == MetricLevel::Minute {
                assert!(
                    now.rollup_bytes > last,
                    "[{b}] {level:?} did not grow: {now:?}"
                );
            }
            assert!(now.rollup_bytes >= last, "[{b}] {level:?} shrank: {now:?}");
            last = now.rollup_bytes;
        }
        assert_eq!(
            store.metric_storage().await?.rows_of(MetricLevel::Day),
            0,
            "[{b}]"
        );
    }
    Ok(())
}
