//! How much the metrics take: rows per level and the on-disk bytes of the two metrics tables
//! with their indexes. This is the one place with backend-specific SQL in metrics, because the
//! backends measure storage differently: SQLite's `dbstat` table (pages of each b-tree, bundled
//! SQLite is built with it), PostgreSQL's `pg_total_relation_size` (heap, TOAST and indexes).
//! It reads the whole tables, so it is for operators and the bench, never a hot path.

use super::MetricLevel;
use crate::db::get_i64;
use crate::error::Result;
use crate::{Backend, Store};

/// Rows and bytes of the metrics tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricStorage {
    /// Rows per level (raw samples, and each rollup level).
    pub rows: Vec<(MetricLevel, u64)>,
    /// `metric_samples` and its indexes, bytes.
    pub raw_bytes: u64,
    /// `metric_rollups` (all levels share it) and its indexes, bytes.
    pub rollup_bytes: u64,
}

impl MetricStorage {
    pub fn rows_of(&self, level: MetricLevel) -> u64 {
        self.rows
            .iter()
            .find(|(l, _)| *l == level)
            .map_or(0, |(_, n)| *n)
    }
}

impl Store {
    async fn table_bytes(&self, table: &'static str) -> Result<u64> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT CAST(COALESCE(SUM(pgsize), 0) AS BIGINT) AS n FROM dbstat \
                 WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = $1)"
            }
            Backend::Postgres => "SELECT CAST(pg_total_relation_size($1) AS BIGINT) AS n",
        };
        let row = sqlx::query(sql).bind(table).fetch_one(self.pool()).await?;
        Ok(get_i64(&row, "n")?.max(0) as u64)
    }

    /// Rows per level and bytes of the metrics tables (a full count: see the module doc).
    pub async fn metric_storage(&self) -> Result<MetricStorage> {
        let raw = sqlx::query("SELECT COUNT(*) AS n FROM metric_samples")
            .fetch_one(self.pool())
            .await?;
        let mut rows = vec![(MetricLevel::Raw, get_i64(&raw, "n")?.max(0) as u64)];
        let by_level =
            sqlx::query("SELECT level, COUNT(*) AS n FROM metric_rollups GROUP BY level")
                .fetch_all(self.pool())
                .await?;
        for level in MetricLevel::ROLLUPS {
            let n = by_level
                .iter()
                .find(|r| get_i64(r, "level").ok() == Some(level.width_ms()))
                .map(|r| get_i64(r, "n"))
                .transpose()?
                .unwrap_or(0);
            rows.push((level, n.max(0) as u64));
        }
        Ok(MetricStorage {
            rows,
            raw_bytes: self.table_bytes("metric_samples").await?,
            rollup_bytes: self.table_bytes("metric_rollups").await?,
        })
    }
}
