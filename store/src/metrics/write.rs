//! Ingestion writes: one multi-row INSERT of raw samples per flush, and the merge of late
//! samples into rollup buckets that a pass already finished.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use sqlx::Row;
use uuid::Uuid;

use super::{Agg, MetricLevel, NewSample, codec, merge_series};
use crate::Tx;
use crate::db::{get_i64, get_str, parse_uuid, uuid_text};
use crate::error::Result;

/// `($1, $2, ...), ($k, ...)`: `rows` rows of `cols` placeholders. A plain INSERT's VALUES get
/// their types from the target columns on both backends, so no casts are needed.
pub(super) fn value_rows(rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * cols + c + 1));
        }
        sql.push(')');
    }
    sql
}

impl Tx {
    /// Stores `samples` with ONE multi-row INSERT (callers cap a flush well below the
    /// parameter limits: 4 per row). A sample already stored (same agent and time: a replay)
    /// is skipped. Returns the indexes into `samples` of those stored now.
    pub async fn insert_metric_samples(&mut self, samples: &[NewSample]) -> Result<Vec<usize>> {
        let mut first: HashMap<(Uuid, i64), usize> = HashMap::with_capacity(samples.len());
        let mut rows = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            // The first of duplicates within one flush wins, as a replay of it would lose.
            if let Entry::Vacant(slot) = first.entry((s.agent_id, s.taken_at_ms)) {
                slot.insert(i);
                rows.push((i, codec::encode_raw(&s.points)?));
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "INSERT INTO metric_samples (agent_id, taken_at, org_id, data) VALUES {} \
             ON CONFLICT (agent_id, taken_at) DO NOTHING RETURNING agent_id, taken_at",
            value_rows(rows.len(), 4)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, data) in rows {
            let s = &samples[i];
            q = q
                .bind(uuid_text(s.agent_id))
                .bind(s.taken_at_ms)
                .bind(uuid_text(s.org_id))
                .bind(data);
        }
        let stored = q.fetch_all(self.conn()).await?;
        let mut out = Vec::with_capacity(stored.len());
        for row in stored {
            let agent = parse_uuid(&get_str(&row, "agent_id")?, "agent_id")?;
            if let Some(i) = first.get(&(agent, get_i64(&row, "taken_at")?)) {
                out.push(*i);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Where each rollup level's passes have got to (`None`: no pass yet).
    pub async fn metric_rollup_marks(&mut self) -> Result<BTreeMap<MetricLevel, i64>> {
        let rows = sqlx::query("SELECT level, done_until FROM metric_rollup_marks")
            .fetch_all(self.conn())
            .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let width: i64 = row.try_get("level")?;
            if let Some(level) = MetricLevel::ROLLUPS
                .into_iter()
                .find(|l| l.width_ms() == width)
            {
                out.insert(level, get_i64(&row, "done_until")?);
            }
        }
        Ok(out)
    }

    /// Merges late samples (older than `level`'s mark, so no pass will read them) into their
    /// finished buckets: read, merge in Rust, write back. Late samples are few (an agent back
    /// from an outage), so this is a query pair per touched bucket, not per sample.
    pub async fn merge_late_metric_samples(
        &mut self,
        level: MetricLevel,
        samples: &[&NewSample],
    ) -> Result<usize> {
        let mut buckets: BTreeMap<(Uuid, i64), (Uuid, Vec<Agg>)> = BTreeMap::new();
        for s in samples {
            let entry = buckets
                .entry((s.agent_id, level.bucket_of(s.taken_at_ms)))
                .or_insert_with(|| (s.org_id, Vec::new()));
            let aggs: Vec<Agg> = s.points.iter().map(|p| Agg::of(p, s.taken_at_ms)).collect();
            merge_series(&mut entry.1, &aggs);
        }
        let touched = buckets.len();
        for ((agent_id, bucket), (org_id, mut aggs)) in buckets {
            let existing = sqlx::query(
                "SELECT data FROM metric_rollups WHERE level = $1 AND agent_id = $2 AND bucket = $3",
            )
            .bind(level.width_ms())
            .bind(uuid_text(agent_id))
            .bind(bucket)
            .fetch_optional(self.conn())
            .await?;
            if let Some(row) = existing {
                let mut merged = codec::decode(&row.try_get::<Vec<u8>, _>("data")?, bucket)?;
                merge_series(&mut merged, &aggs);
                aggs = merged;
            }
            upsert_rollups(self, level, &[(org_id, agent_id, bucket, aggs)]).await?;
        }
        Ok(touched)
    }
}

/// Writes whole rollup rows (the caller merged them), up to 500 rows per statement.
pub(super) async fn upsert_rollups(
    tx: &mut Tx,
    level: MetricLevel,
    rows: &[(Uuid, Uuid, i64, Vec<Agg>)],
) -> Result<()> {
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO metric_rollups (level, agent_id, bucket, org_id, data) VALUES {} \
             ON CONFLICT (level, agent_id, bucket) DO UPDATE SET data = excluded.data",
            value_rows(chunk.len(), 5)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (org_id, agent_id, bucket, aggs) in chunk {
            q = q
                .bind(level.width_ms())
                .bind(uuid_text(*agent_id))
                .bind(*bucket)
                .bind(uuid_text(*org_id))
                .bind(codec::encode_rollup(aggs)?);
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}
