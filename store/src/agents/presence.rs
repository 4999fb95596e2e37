//! The connection lease: which node holds each live agent (`connected`, `node_id`), when it was
//! last seen, and which held connections must be dropped.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::{AgentHello, CHUNK};
use crate::Store;
use crate::db::{get_str, parse_uuid, placeholders, to_json_text, uuid_text};
use crate::error::{Result, StoreError};

impl Store {
    /// Records a hello: the agent is now connected through `node_id`, with what it reported
    /// (hostname, version, capabilities, inventory, its sealing key). `NotFound` if the agent
    /// does not exist.
    pub async fn mark_agent_online(
        &self,
        id: Uuid,
        node_id: &str,
        hello: &AgentHello,
        now_ms: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE agents SET connected = 1, node_id = $2, hostname = $3, agent_version = $4, \
             capabilities = $5, inventory = $6, last_seen = $7, sealing_key = $8 WHERE id = $1",
        )
        .bind(uuid_text(id))
        .bind(node_id)
        .bind(&hello.hostname)
        .bind(&hello.agent_version)
        .bind(to_json_text(&hello.capabilities, "capabilities")?)
        .bind(to_json_text(&hello.inventory, "inventory")?)
        .bind(now_ms)
        .bind(hello.sealing_key.map(hex::encode))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records a disconnect, but only if `node_id` still holds the lease: when the agent has
    /// already reconnected through another node, that newer connection must not be clobbered.
    pub async fn mark_agent_offline(&self, id: Uuid, node_id: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET connected = 0, node_id = NULL, last_seen = $3 \
             WHERE id = $1 AND node_id = $2",
        )
        .bind(uuid_text(id))
        .bind(node_id)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Releases every lease held by `node_id` (at node start after a crash, and at shutdown).
    /// Returns how many agents were affected.
    pub async fn mark_node_agents_offline(&self, node_id: &str, now_ms: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE agents SET connected = 0, node_id = NULL, last_seen = $2 WHERE node_id = $1",
        )
        .bind(node_id)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Stores a batch of heartbeat times in one transaction, a few hundred rows per statement.
    /// `last_seen` never moves backwards, so a late batch cannot undo a newer disconnect stamp.
    pub async fn touch_last_seen(&self, seen: &[(Uuid, i64)]) -> Result<()> {
        let mut latest: HashMap<Uuid, i64> = HashMap::with_capacity(seen.len());
        for &(id, ts) in seen {
            latest
                .entry(id)
                .and_modify(|t| *t = (*t).max(ts))
                .or_insert(ts);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let mut batch: Vec<(Uuid, i64)> = latest.into_iter().collect();
        // A stable order keeps two overlapping batches (say, from two nodes during a handover)
        // from taking row locks in opposite orders and deadlocking on PostgreSQL.
        batch.sort_unstable_by_key(|&(id, _)| id);
        let mut tx = self.begin_write().await?;
        for chunk in batch.chunks(CHUNK) {
            let values = crate::db::values_rows(1, chunk.len(), &["TEXT", "BIGINT"]);
            // VALUES columns are named column1, column2 by both SQLite and PostgreSQL.
            let sql = format!(
                "UPDATE agents SET last_seen = v.column2 FROM (VALUES {values}) AS v \
                 WHERE agents.id = v.column1 \
                   AND (agents.last_seen IS NULL OR agents.last_seen < v.column2)"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &(id, ts) in chunk {
                query = query.bind(uuid_text(id)).bind(ts);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Of `ids`, those whose connection must be dropped: revoked, not (or no longer) approved,
    /// or deleted. Each id is reported once, in input order.
    pub async fn agents_no_longer_allowed(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let mut unique = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if seen.insert(id) {
                unique.push(id);
            }
        }
        let mut allowed = HashSet::with_capacity(unique.len());
        for chunk in unique.chunks(CHUNK) {
            let sql = format!(
                "SELECT id FROM agents WHERE id IN ({}) AND revoked = 0 AND approval = 'approved'",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &id in chunk {
                query = query.bind(uuid_text(id));
            }
            for row in query.fetch_all(self.pool()).await? {
                allowed.insert(parse_uuid(&get_str(&row, "id")?, "id")?);
            }
        }
        Ok(unique
            .into_iter()
            .filter(|id| !allowed.contains(id))
            .collect())
    }
}
