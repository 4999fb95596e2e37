//! Incremental rollups and expiry. A pass of a level reads only the source rows of buckets after
//! its mark (an indexed time range), writes each closed bucket once, and moves the mark, all in
//! one transaction; expiry deletes an indexed range below the cutoff, one bounded chunk at a
//! time. Nothing here ever scans a whole table.

use std::collections::BTreeMap;

use sqlx::Row;
use uuid::Uuid;

use super::write::upsert_rollups;
use super::{Agg, MetricLevel, codec, merge_series};
use crate::Tx;
use crate::db::{get_i64, get_str, parse_uuid};
use crate::error::Result;

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RollupPass {
    /// Source rows read.
    pub rows_read: u64,
    /// Rollup rows written.
    pub buckets_written: u64,
    /// The level's mark after the pass.
    pub done_until: i64,
    /// Whether closed buckets remain after this pass (it hit `max_buckets`).
    pub behind: bool,
}

impl Tx {
    /// Rolls up `level`'s buckets that closed before `closed_before_ms` (and, for 5 m and up,
    /// whose source level has finished them), at most `max_buckets` of them. The first pass of a
    /// level only sets its mark: samples older than the mark are merged as late samples.
    pub async fn roll_up_metrics(
        &mut self,
        level: MetricLevel,
        closed_before_ms: i64,
        max_buckets: i64,
    ) -> Result<RollupPass> {
        let Some(source) = level.source() else {
            return Ok(RollupPass::default());
        };
        let width = level.width_ms();
        let marks = self.metric_rollup_marks().await?;
        let mut until = level.bucket_of(closed_before_ms);
        if source != MetricLevel::Raw {
            // A coarser bucket is complete only once its finer source buckets are.
            let Some(source_mark) = marks.get(&source) else {
                return Ok(RollupPass::default());
            };
            until = until.min(level.bucket_of(*source_mark));
        }
        let Some(&mark) = marks.get(&level) else {
            sqlx::query(
                "INSERT INTO metric_rollup_marks (level, done_until) VALUES ($1, $2) \
                 ON CONFLICT (level) DO NOTHING",
            )
            .bind(width)
            .bind(until)
            .execute(self.conn())
            .await?;
            return Ok(RollupPass {
                done_until: until,
                ..RollupPass::default()
            });
        };
        let end = until.min(mark.saturating_add(max_buckets.max(1).saturating_mul(width)));
        if end <= mark {
            return Ok(RollupPass {
                done_until: mark,
                ..RollupPass::default()
            });
        }
        // Guarded: when two nodes race, one moves the mark and the other does nothing.
        let moved = sqlx::query(
            "UPDATE metric_rollup_marks SET done_until = $1 WHERE level = $2 AND done_until = $3",
        )
        .bind(end)
        .bind(width)
        .bind(mark)
        .execute(self.conn())
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(RollupPass {
                done_until: mark,
                ..RollupPass::default()
            });
        }
        let rows = if source == MetricLevel::Raw {
            sqlx::query(
                "SELECT agent_id, org_id, taken_at AS at, data FROM metric_samples \
                 WHERE taken_at >= $1 AND taken_at < $2",
            )
            .bind(mark)
            .bind(end)
            .fetch_all(self.conn())
            .await?
        } else {
            sqlx::query(
                "SELECT agent_id, org_id, bucket AS at, data FROM metric_rollups \
                 WHERE level = $1 AND bucket >= $2 AND bucket < $3",
            )
            .bind(source.width_ms())
            .bind(mark)
            .bind(end)
            .fetch_all(self.conn())
            .await?
        };
        let rows_read = rows.len() as u64;
        let mut buckets: BTreeMap<(Uuid, i64), (Uuid, Vec<Agg>)> = BTreeMap::new();
        for row in rows {
            let agent_id = parse_uuid(&get_str(&row, "agent_id")?, "agent_id")?;
            let org_id = parse_uuid(&get_str(&row, "org_id")?, "org_id")?;
            let at = get_i64(&row, "at")?;
            let aggs = codec::decode(&row.try_get::<Vec<u8>, _>("data")?, at)?;
            let entry = buckets
                .entry((agent_id, level.bucket_of(at)))
                .or_insert_with(|| (org_id, Vec::new()));
            merge_series(&mut entry.1, &aggs);
        }
        let out: Vec<_> = buckets
            .into_iter()
            .map(|((agent_id, bucket), (org_id, aggs))| (org_id, agent_id, bucket, aggs))
            .collect();
        upsert_rollups(self, level, &out).await?;
        Ok(RollupPass {
            rows_read,
            buckets_written: out.len() as u64,
            done_until: end,
            behind: end < until,
        })
    }

    /// Deletes rows of `level` older than `cutoff_ms`, at most `chunk_ms` of time from the
    /// oldest row on: the oldest comes from the index, the delete is an indexed range.
    /// Returns the rows deleted (0 when nothing is older than the cutoff).
    pub async fn expire_metrics(
        &mut self,
        level: MetricLevel,
        cutoff_ms: i64,
        chunk_ms: i64,
    ) -> Result<u64> {
        let oldest: Option<i64> = if level == MetricLevel::Raw {
            sqlx::query("SELECT MIN(taken_at) AS oldest FROM metric_samples")
                .fetch_one(self.conn())
                .await?
                .try_get("oldest")?
        } else {
            sqlx::query("SELECT MIN(bucket) AS oldest FROM metric_rollups WHERE level = $1")
                .bind(level.width_ms())
                .fetch_one(self.conn())
                .await?
                .try_get("oldest")?
        };
        let Some(oldest) = oldest.filter(|o| *o < cutoff_ms) else {
            return Ok(0);
        };
        let below = cutoff_ms.min(oldest.saturating_add(chunk_ms.max(1)));
        let done = if level == MetricLevel::Raw {
            sqlx::query("DELETE FROM metric_samples WHERE taken_at < $1")
                .bind(below)
                .execute(self.conn())
                .await?
        } else {
            sqlx::query("DELETE FROM metric_rollups WHERE level = $1 AND bucket < $2")
                .bind(level.width_ms())
                .bind(below)
                .execute(self.conn())
                .await?
        };
        Ok(done.rows_affected())
    }
}
