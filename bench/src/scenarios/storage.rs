//! Metrics storage per agent per day at each level, measured on the real store rather than
//! extrapolated from a short run (an hour bucket only exists after an hour, a day one after a
//! day). One simulated day of the simulator's own sample, every `interval_s`, for `agents`
//! agents, goes through the store's ingestion INSERT (batches of the writer's flush size) and
//! then through its rollup passes, level by level, on a fresh database; after each level its
//! growth is measured with [`Store::metric_storage`] (table and index bytes, so index entries
//! count). Levels share the rollups table, so a level's bytes are the growth it caused.

use anyhow::{Context, Result, ensure};
use reap3r_actors::metrics::{AgentSample, MetricsSettings, new_sample, series_of};
use reap3r_store::{MetricLevel, MetricStorage, NewSample, Store, Uuid, install_drivers};
use sqlx::{AnyConnection, Connection};

use crate::sim::sample;

/// The simulated day starts here (2026-01-01T00:00:00Z, on every level's bucket boundary).
const DAY_START_MS: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;
/// Rollup buckets per pass (the writer's passes are bounded the same way).
const BUCKETS_PER_PASS: i64 = 60;

/// What one level costs per agent per day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelCost {
    pub level: MetricLevel,
    pub rows: u64,
    pub bytes: u64,
}

async fn roll_up(store: &Store, level: MetricLevel, closed_before_ms: i64) -> Result<()> {
    loop {
        let mut tx = store.begin().await?;
        let pass = tx
            .roll_up_metrics(level, closed_before_ms, BUCKETS_PER_PASS)
            .await?;
        tx.commit().await?;
        if !pass.behind {
            return Ok(());
        }
    }
}

fn samples_at(agents: &[Uuid], org: Uuid, at_ms: i64) -> impl Iterator<Item = NewSample> + '_ {
    agents.iter().enumerate().map(move |(i, agent)| {
        new_sample(&AgentSample {
            agent_id: *agent,
            org_id: org,
            taken_at_ms: at_ms,
            values: series_of(&sample(i, false, at_ms as u64)),
        })
    })
}

/// Writes one day for `agents` agents into `store` (which must hold no metrics yet) and returns
/// each level's rows and bytes per agent-day, raw first.
pub async fn per_agent_day(
    store: &Store,
    agents: usize,
    interval_s: u32,
) -> Result<Vec<LevelCost>> {
    ensure!(
        agents > 0 && interval_s > 0,
        "agents and interval must be positive"
    );
    let before = store.metric_storage().await?;
    ensure!(
        before.rows.iter().all(|(_, n)| *n == 0),
        "the storage measure needs a database without metrics"
    );
    // First passes only set each level's mark: at the day's start, so nothing is "late".
    for level in MetricLevel::ROLLUPS {
        roll_up(store, level, DAY_START_MS).await?;
    }
    let org = Uuid::new_v4();
    let ids: Vec<Uuid> = (0..agents).map(|_| Uuid::new_v4()).collect();
    let flush = MetricsSettings::default().flush_max;
    let step = i64::from(interval_s) * 1000;
    let mut batch = Vec::with_capacity(flush + agents);
    let mut at = DAY_START_MS;
    while at < DAY_START_MS + DAY_MS {
        batch.extend(samples_at(&ids, org, at));
        at += step;
        let last = at >= DAY_START_MS + DAY_MS;
        while batch.len() >= flush || (last && !batch.is_empty()) {
            let rows: Vec<NewSample> = batch.drain(..batch.len().min(flush)).collect();
            let mut tx = store.begin().await?;
            let stored = tx.insert_metric_samples(&rows).await?;
            tx.commit().await?;
            ensure!(
                stored.len() == rows.len(),
                "a simulated sample was not stored"
            );
        }
    }
    let mut costs = Vec::new();
    let mut last = store.metric_storage().await?;
    let per = |n: u64| n / agents as u64;
    costs.push(LevelCost {
        level: MetricLevel::Raw,
        rows: per(last.rows_of(MetricLevel::Raw)),
        bytes: per(last.raw_bytes.saturating_sub(before.raw_bytes)),
    });
    for level in MetricLevel::ROLLUPS {
        roll_up(store, level, DAY_START_MS + DAY_MS).await?;
        let now: MetricStorage = store.metric_storage().await?;
        costs.push(LevelCost {
            level,
            rows: per(now.rows_of(level)),
            bytes: per(now.rollup_bytes.saturating_sub(last.rollup_bytes)),
        });
        last = now;
    }
    Ok(costs)
}

/// A fresh PostgreSQL database next to `admin_url`'s (dropped by [`drop_postgres`]).
pub async fn fresh_postgres(admin_url: &str) -> Result<(String, String)> {
    let name = format!("reap3r_bench_{}", Uuid::new_v4().simple());
    install_drivers();
    let mut admin = AnyConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    Ok((format!("{base}/{name}"), name))
}

pub async fn drop_postgres(admin_url: &str, name: &str) -> Result<()> {
    let mut admin = AnyConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}
