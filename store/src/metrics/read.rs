//! Reads for queries: one agent's rows of one level over a time range, and the latest sample of
//! every agent of an organisation (optionally in a folder or with a tag) for fleet views.

use sqlx::Row;
use uuid::Uuid;

use super::{Agg, MetricLevel, codec};
use crate::Store;
use crate::db::{get_i64, get_str, parse_uuid, uuid_text};
use crate::error::Result;

/// One row of a level: a raw sample (aggregates of count 1) or a rollup bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRow {
    /// Sample time, or bucket start.
    pub at_ms: i64,
    pub series: Vec<Agg>,
}

/// Which agents a fleet view covers, within one organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFilter {
    pub tag_id: Option<Uuid>,
    pub folder_id: Option<Uuid>,
}

/// An agent's newest raw sample.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestSample {
    pub agent_id: Uuid,
    pub hostname: String,
    pub taken_at_ms: i64,
    pub series: Vec<Agg>,
}

impl Store {
    /// Rows of `level` for one agent of `org_id` with `from_ms <= time < to_ms`, oldest first,
    /// at most `limit` (the primary key serves the range).
    pub async fn metric_rows(
        &self,
        org_id: Uuid,
        agent_id: Uuid,
        level: MetricLevel,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<SeriesRow>> {
        let rows = if level == MetricLevel::Raw {
            sqlx::query(
                "SELECT taken_at AS at, data FROM metric_samples \
                 WHERE agent_id = $1 AND org_id = $2 AND taken_at >= $3 AND taken_at < $4 \
                 ORDER BY taken_at LIMIT $5",
            )
            .bind(uuid_text(agent_id))
            .bind(uuid_text(org_id))
            .bind(from_ms)
            .bind(to_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(
                "SELECT bucket AS at, data FROM metric_rollups \
                 WHERE level = $1 AND agent_id = $2 AND org_id = $3 AND bucket >= $4 \
                 AND bucket < $5 ORDER BY bucket LIMIT $6",
            )
            .bind(level.width_ms())
            .bind(uuid_text(agent_id))
            .bind(uuid_text(org_id))
            .bind(from_ms)
            .bind(to_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
        };
        rows.into_iter()
            .map(|row| {
                let at_ms = get_i64(&row, "at")?;
                let series = codec::decode(&row.try_get::<Vec<u8>, _>("data")?, at_ms)?;
                Ok(SeriesRow { at_ms, series })
            })
            .collect()
    }

    /// The newest sample taken at or after `since_ms` of every agent of `org_id` that matches
    /// `filter`: one probe of the primary key per agent, not a scan of the samples.
    pub async fn latest_metric_samples(
        &self,
        org_id: Uuid,
        filter: &FleetFilter,
        since_ms: i64,
    ) -> Result<Vec<LatestSample>> {
        let mut sql = String::from(
            "SELECT a.id AS agent_id, a.hostname AS hostname, s.taken_at AS taken_at, s.data AS data \
             FROM agents a JOIN metric_samples s ON s.agent_id = a.id \
             WHERE a.org_id = $1 AND s.taken_at = (SELECT MAX(m.taken_at) FROM metric_samples m \
             WHERE m.agent_id = a.id AND m.taken_at >= $2)",
        );
        let mut n = 2;
        if filter.folder_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND a.folder_id = ${n}"));
        }
        if filter.tag_id.is_some() {
            n += 1;
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM agent_tags t WHERE t.agent_id = a.id AND t.tag_id = ${n})"
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .bind(since_ms);
        if let Some(folder) = filter.folder_id {
            q = q.bind(uuid_text(folder));
        }
        if let Some(tag) = filter.tag_id {
            q = q.bind(uuid_text(tag));
        }
        q.fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| {
                let taken_at_ms = get_i64(&row, "taken_at")?;
                Ok(LatestSample {
                    agent_id: parse_uuid(&get_str(&row, "agent_id")?, "agent_id")?,
                    hostname: get_str(&row, "hostname")?,
                    taken_at_ms,
                    series: codec::decode(&row.try_get::<Vec<u8>, _>("data")?, taken_at_ms)?,
                })
            })
            .collect()
    }
}
