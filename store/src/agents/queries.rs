//! Reads: one agent, every agent, an organisation's agents page by page under a filter, and
//! their counts by status and operating system.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::records::status_of;
use super::{Agent, AgentCursor, AgentFilter, AgentStats, AgentStatus, MAX_AGENT_PAGE};
use super::{CHUNK, agent_from_row, agent_in_org};
use crate::Store;
use crate::db::{
    Conditions, get_bool, get_i64, get_str, get_uuid, like_substring, placeholders, uuid_text,
};
use crate::error::{Result, StoreError};

/// The SQL condition equivalent to `Agent::status() == status`.
fn status_condition(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Revoked => "revoked = 1",
        AgentStatus::Rejected => "(revoked = 0 AND approval = 'rejected')",
        AgentStatus::Pending => "(revoked = 0 AND approval = 'pending')",
        AgentStatus::Online => "(revoked = 0 AND approval = 'approved' AND connected = 1)",
        AgentStatus::Offline => "(revoked = 0 AND approval = 'approved' AND connected = 0)",
    }
}

impl Store {
    pub async fn agent(&self, id: Uuid) -> Result<Option<Agent>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_cols!(),
            " FROM agents WHERE id = $1"
        ))
        .bind(uuid_text(id))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    /// Agents ordered by hostname then id (byte order on both backends); all organisations when
    /// `org_id` is `None`.
    pub async fn list_agents(&self, org_id: Option<Uuid>) -> Result<Vec<Agent>> {
        let rows = match org_id {
            Some(org) => {
                sqlx::query(concat!(
                    "SELECT ",
                    agent_cols!(),
                    " FROM agents WHERE org_id = $1 ORDER BY hostname, id"
                ))
                .bind(uuid_text(org))
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    agent_cols!(),
                    " FROM agents ORDER BY hostname, id"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        let mut agents = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>>>()?;
        // PostgreSQL sorts text by the database's locale collation, SQLite by bytes; re-sort so
        // callers see the same order whichever backend is configured.
        agents.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        Ok(agents)
    }

    /// The agent, if it belongs to `org_id`.
    pub async fn agent_in_org(&self, org_id: Uuid, id: Uuid) -> Result<Option<Agent>> {
        agent_in_org(self.pool(), org_id, id).await
    }

    /// One page of an organisation's agents matching `filter`, in (enrolled_at, id) order,
    /// strictly after `after`. `limit` is clamped to 1..=[`MAX_AGENT_PAGE`]. The cursor compares
    /// in the database's own order on both columns, the same one the page is sorted by, so paging
    /// neither repeats nor skips agents.
    pub async fn list_agents_page(
        &self,
        org_id: Uuid,
        filter: &AgentFilter,
        after: Option<&AgentCursor>,
        limit: i64,
    ) -> Result<Vec<Agent>> {
        let mut c = Conditions::default();
        let p = c.text(uuid_text(org_id));
        c.and(format!("org_id = {p}"));
        if let Some(status) = filter.status {
            c.and(status_condition(status).to_owned());
        }
        if let Some(os) = &filter.os {
            let p = c.text(os.trim());
            c.and(format!("LOWER(os) = LOWER({p})"));
        }
        if let Some(tag) = filter.tag_id {
            let p = c.text(uuid_text(tag));
            c.and(format!(
                "EXISTS (SELECT 1 FROM agent_tags t WHERE t.agent_id = agents.id AND t.tag_id = {p})"
            ));
        }
        for (column, id) in [
            ("folder_id", filter.folder_id),
            ("site_id", filter.site_id),
            ("company_id", filter.company_id),
        ] {
            if let Some(id) = id {
                let p = c.text(uuid_text(id));
                c.and(format!("{column} = {p}"));
            }
        }
        if let Some(search) = &filter.search {
            let p = c.text(like_substring(search));
            c.and(format!("LOWER(hostname) LIKE LOWER({p}) ESCAPE '\\'"));
        }
        if let Some(cursor) = after {
            let at = c.int(cursor.enrolled_at);
            let id = c.text(uuid_text(cursor.id));
            c.and(format!(
                "(enrolled_at > {at} OR (enrolled_at = {at} AND id > {id}))"
            ));
        }
        let limit = c.int(limit.clamp(1, MAX_AGENT_PAGE));
        let sql = format!(
            concat!(
                "SELECT ",
                agent_cols!(),
                " FROM agents{} ORDER BY enrolled_at, id LIMIT {}"
            ),
            c.where_sql(),
            limit
        );
        let rows = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Counts of an organisation's agents by status and by (lower-cased) operating system.
    pub async fn agent_stats(&self, org_id: Uuid) -> Result<AgentStats> {
        let mut stats = AgentStats::default();
        let rows = sqlx::query(
            "SELECT revoked, approval, connected, COUNT(*) AS n FROM agents WHERE org_id = $1              GROUP BY revoked, approval, connected",
        )
        .bind(uuid_text(org_id))
        .fetch_all(self.pool())
        .await?;
        for row in &rows {
            let n = u64::try_from(get_i64(row, "n")?).unwrap_or(0);
            let status = status_of(
                get_bool(row, "revoked")?,
                get_str(row, "approval")?.parse()?,
                get_bool(row, "connected")?,
            );
            stats.total += n;
            *match status {
                AgentStatus::Online => &mut stats.online,
                AgentStatus::Offline => &mut stats.offline,
                AgentStatus::Pending => &mut stats.pending,
                AgentStatus::Rejected => &mut stats.rejected,
                AgentStatus::Revoked => &mut stats.revoked,
            } += n;
        }
        let rows = sqlx::query(
            "SELECT LOWER(os) AS os, COUNT(*) AS n FROM agents WHERE org_id = $1              GROUP BY LOWER(os)",
        )
        .bind(uuid_text(org_id))
        .fetch_all(self.pool())
        .await?;
        stats.by_os = rows
            .iter()
            .map(|row| {
                Ok((
                    get_str(row, "os")?,
                    u64::try_from(get_i64(row, "n")?).unwrap_or(0),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        stats
            .by_os
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(stats)
    }

    /// The X25519 sealing keys (as their latest hello announced them) of those of `agent_ids`
    /// that belong to `org_id` and have one: what secrets for a job are sealed to. An agent of
    /// another organisation, an unknown id or an agent without a key is absent from the map.
    /// Batched, a few hundred ids per query.
    pub async fn sealing_keys(
        &self,
        org_id: Uuid,
        agent_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, [u8; 32]>> {
        let unique: Vec<Uuid> = {
            let mut seen = HashSet::with_capacity(agent_ids.len());
            agent_ids
                .iter()
                .copied()
                .filter(|id| seen.insert(*id))
                .collect()
        };
        let mut keys = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, sealing_key FROM agents \
                 WHERE org_id = $1 AND sealing_key IS NOT NULL AND id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(uuid_text(org_id));
            for &id in chunk {
                query = query.bind(uuid_text(id));
            }
            for row in query.fetch_all(self.pool()).await? {
                let id = get_uuid(&row, "id")?;
                let key = get_str(&row, "sealing_key")?;
                let key: [u8; 32] = hex::decode(&key)
                    .ok()
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(|| {
                        StoreError::Invalid(format!("stored sealing key of agent {id} is corrupt"))
                    })?;
                keys.insert(id, key);
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_conditions_cover_every_status() {
        for (status, sql) in [
            (AgentStatus::Revoked, "revoked = 1"),
            (AgentStatus::Online, "connected = 1"),
            (AgentStatus::Offline, "connected = 0"),
            (AgentStatus::Pending, "'pending'"),
            (AgentStatus::Rejected, "'rejected'"),
        ] {
            assert!(status_condition(status).contains(sql), "{status}");
        }
    }
}
