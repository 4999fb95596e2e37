//! Enrolled agents: identity, approval, revocation and the connection lease (`node_id`,
//! `connected`, `last_seen`) that tells which control-plane node holds each live agent.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection};
use uuid::Uuid;

use crate::db::{
    Conditions, bool_int, get_bool, get_i64, get_json, get_opt_i64, get_opt_str, get_opt_uuid,
    get_str, get_uuid, like_substring, parse_uuid, placeholders, to_json_text, uuid_text,
};
use crate::error::{Result, StoreError};
use crate::{Store, Tx};

/// Whether an operator has let the agent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentApproval {
    Approved,
    Pending,
    Rejected,
}

impl AgentApproval {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentApproval::Approved => "approved",
            AgentApproval::Pending => "pending",
            AgentApproval::Rejected => "rejected",
        }
    }
}

impl FromStr for AgentApproval {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "approved" => Ok(AgentApproval::Approved),
            "pending" => Ok(AgentApproval::Pending),
            "rejected" => Ok(AgentApproval::Rejected),
            other => Err(StoreError::Invalid(format!("unknown approval {other:?}"))),
        }
    }
}

impl std::fmt::Display for AgentApproval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator sees for an agent, derived from approval, revocation and connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Online,
    Offline,
    Pending,
    Rejected,
    Revoked,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
            AgentStatus::Pending => "pending",
            AgentStatus::Rejected => "rejected",
            AgentStatus::Revoked => "revoked",
        }
    }
}

impl FromStr for AgentStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "online" => Ok(AgentStatus::Online),
            "offline" => Ok(AgentStatus::Offline),
            "pending" => Ok(AgentStatus::Pending),
            "rejected" => Ok(AgentStatus::Rejected),
            "revoked" => Ok(AgentStatus::Revoked),
            other => Err(StoreError::Invalid(format!(
                "unknown agent status {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent presents at enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAgent {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
    /// Ed25519 public key (serialised as hex).
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
}

/// What an agent reports each time it connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHello {
    pub hostname: String,
    pub agent_version: String,
    pub capabilities: Vec<String>,
    pub inventory: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    pub org_id: Uuid,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
    /// Ed25519 public key (serialised as hex).
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
    pub approval: AgentApproval,
    pub revoked: bool,
    pub connected: bool,
    /// The node holding the live connection, while connected.
    pub node_id: Option<String>,
    pub capabilities: Vec<String>,
    /// Last reported inventory; `{}` until the first hello.
    pub inventory: serde_json::Value,
    pub token_id: Option<Uuid>,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    #[serde(default)]
    pub folder_id: Option<Uuid>,
    #[serde(default)]
    pub site_id: Option<Uuid>,
    #[serde(default)]
    pub company_id: Option<Uuid>,
}

/// Which agents [`Store::list_agents_page`] returns; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Same meaning as [`Agent::status`].
    pub status: Option<AgentStatus>,
    /// Compared ignoring letter case.
    pub os: Option<String>,
    pub tag_id: Option<Uuid>,
    pub folder_id: Option<Uuid>,
    pub site_id: Option<Uuid>,
    pub company_id: Option<Uuid>,
    /// Case-insensitive substring of the hostname.
    pub search: Option<String>,
}

/// Position in the (enrolled_at, id) order: a page starts strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentCursor {
    pub enrolled_at: i64,
    pub id: Uuid,
}

impl From<&Agent> for AgentCursor {
    fn from(agent: &Agent) -> Self {
        AgentCursor {
            enrolled_at: agent.enrolled_at,
            id: agent.id,
        }
    }
}

/// Counts of an organisation's agents by [`Agent::status`] and by operating system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    pub total: u64,
    pub online: u64,
    pub offline: u64,
    pub pending: u64,
    pub rejected: u64,
    pub revoked: u64,
    /// Lower-cased OS name and count, most common first (ties by name).
    pub by_os: Vec<(String, u64)>,
}

/// Most agents [`Store::list_agents_page`] returns in one call.
pub const MAX_AGENT_PAGE: i64 = 1_000;

impl Agent {
    /// Revocation outranks approval, which outranks connection state.
    pub fn status(&self) -> AgentStatus {
        status_of(self.revoked, self.approval, self.connected)
    }

    /// Whether the agent may hold a connection at all.
    pub fn is_allowed(&self) -> bool {
        !self.revoked && self.approval == AgentApproval::Approved
    }
}

fn status_of(revoked: bool, approval: AgentApproval, connected: bool) -> AgentStatus {
    if revoked {
        return AgentStatus::Revoked;
    }
    match approval {
        AgentApproval::Rejected => AgentStatus::Rejected,
        AgentApproval::Pending => AgentStatus::Pending,
        AgentApproval::Approved if connected => AgentStatus::Online,
        AgentApproval::Approved => AgentStatus::Offline,
    }
}

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

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(&text, &mut key).map_err(D::Error::custom)?;
        Ok(key)
    }
}

macro_rules! agent_cols {
    () => {
        "id, org_id, hostname, os, arch, agent_version, public_key, approval, revoked, connected, \
         node_id, capabilities, inventory, token_id, enrolled_at, last_seen, folder_id, site_id, \
         company_id"
    };
}

/// Parameters per statement stay well below SQLite's and PostgreSQL's limits.
const CHUNK: usize = 400;

fn agent_from_row(row: &AnyRow) -> Result<Agent> {
    let key: Vec<u8> = sqlx::Row::try_get(row, "public_key")?;
    let public_key: [u8; 32] = key
        .try_into()
        .map_err(|_| StoreError::Invalid("stored public key is not 32 bytes".into()))?;
    Ok(Agent {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        hostname: get_str(row, "hostname")?,
        os: get_str(row, "os")?,
        arch: get_str(row, "arch")?,
        agent_version: get_str(row, "agent_version")?,
        public_key,
        approval: get_str(row, "approval")?.parse()?,
        revoked: get_bool(row, "revoked")?,
        connected: get_bool(row, "connected")?,
        node_id: get_opt_str(row, "node_id")?,
        capabilities: get_json(row, "capabilities")?,
        inventory: get_json(row, "inventory")?,
        token_id: get_opt_uuid(row, "token_id")?,
        enrolled_at: get_i64(row, "enrolled_at")?,
        last_seen: get_opt_i64(row, "last_seen")?,
        folder_id: get_opt_uuid(row, "folder_id")?,
        site_id: get_opt_uuid(row, "site_id")?,
        company_id: get_opt_uuid(row, "company_id")?,
    })
}

/// Inserts a freshly enrolled agent inside the caller's transaction.
pub(crate) async fn insert_agent(
    conn: &mut AnyConnection,
    org_id: Uuid,
    token_id: Option<Uuid>,
    approval: AgentApproval,
    new: &NewAgent,
    now_ms: i64,
) -> Result<Agent> {
    let agent = Agent {
        id: Uuid::new_v4(),
        org_id,
        hostname: new.hostname.clone(),
        os: new.os.clone(),
        arch: new.arch.clone(),
        agent_version: new.agent_version.clone(),
        public_key: new.public_key,
        approval,
        revoked: false,
        connected: false,
        node_id: None,
        capabilities: Vec::new(),
        inventory: serde_json::Value::Object(serde_json::Map::new()),
        token_id,
        enrolled_at: now_ms,
        last_seen: None,
        folder_id: None,
        site_id: None,
        company_id: None,
    };
    sqlx::query(concat!(
        "INSERT INTO agents (",
        agent_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
         $17, $18, $19)"
    ))
    .bind(uuid_text(agent.id))
    .bind(uuid_text(agent.org_id))
    .bind(agent.hostname.clone())
    .bind(agent.os.clone())
    .bind(agent.arch.clone())
    .bind(agent.agent_version.clone())
    .bind(agent.public_key.to_vec())
    .bind(agent.approval.as_str())
    .bind(bool_int(agent.revoked))
    .bind(bool_int(agent.connected))
    .bind(agent.node_id.clone())
    .bind(to_json_text(&agent.capabilities, "capabilities")?)
    .bind(to_json_text(&agent.inventory, "inventory")?)
    .bind(agent.token_id.map(uuid_text))
    .bind(agent.enrolled_at)
    .bind(agent.last_seen)
    .bind(agent.folder_id.map(uuid_text))
    .bind(agent.site_id.map(uuid_text))
    .bind(agent.company_id.map(uuid_text))
    .execute(&mut *conn)
    .await?;
    Ok(agent)
}

/// The agent, if it belongs to `org_id`: on the pool or inside a transaction.
async fn agent_in_org<'e, E>(executor: E, org_id: Uuid, id: Uuid) -> Result<Option<Agent>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(concat!(
        "SELECT ",
        agent_cols!(),
        " FROM agents WHERE id = $1 AND org_id = $2"
    ))
    .bind(uuid_text(id))
    .bind(uuid_text(org_id))
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(agent_from_row).transpose()
}

/// Operators' changes to an agent: approval, revocation, deletion. Each is scoped to the
/// organisation; another organisation's agent is `NotFound`.
impl Tx {
    /// The agent, if it belongs to `org_id`, read inside this transaction.
    pub async fn agent_in_org(&mut self, org_id: Uuid, id: Uuid) -> Result<Option<Agent>> {
        agent_in_org(&mut *self.conn(), org_id, id).await
    }

    /// Approves, rejects or sends back to pending an agent of `org_id`.
    pub async fn set_agent_approval(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        approval: AgentApproval,
    ) -> Result<Agent> {
        let row = sqlx::query(concat!(
            "UPDATE agents SET approval = $3 WHERE id = $1 AND org_id = $2 RETURNING ",
            agent_cols!()
        ))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .bind(approval.as_str())
        .fetch_optional(&mut *self.conn())
        .await?
        .ok_or(StoreError::NotFound)?;
        agent_from_row(&row)
    }

    /// Revokes an agent of `org_id` for good. The live connection, if any, is dropped by
    /// whoever holds it (see [`Store::agents_no_longer_allowed`]).
    pub async fn revoke_agent(&mut self, org_id: Uuid, id: Uuid) -> Result<Agent> {
        let row = sqlx::query(concat!(
            "UPDATE agents SET revoked = 1 WHERE id = $1 AND org_id = $2 RETURNING ",
            agent_cols!()
        ))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .fetch_optional(&mut *self.conn())
        .await?
        .ok_or(StoreError::NotFound)?;
        agent_from_row(&row)
    }

    /// Deletes an agent of `org_id` (its tags go with it). A live connection is dropped by
    /// whoever holds it (see [`Store::agents_no_longer_allowed`], which reports deleted agents).
    pub async fn delete_agent(&mut self, org_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM agents WHERE id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
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

    /// Records a hello: the agent is now connected through `node_id`. `NotFound` if the agent
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
             capabilities = $5, inventory = $6, last_seen = $7 WHERE id = $1",
        )
        .bind(uuid_text(id))
        .bind(node_id)
        .bind(&hello.hostname)
        .bind(&hello.agent_version)
        .bind(to_json_text(&hello.capabilities, "capabilities")?)
        .bind(to_json_text(&hello.inventory, "inventory")?)
        .bind(now_ms)
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

impl Store {
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

    #[test]
    fn enums_round_trip_through_text_and_serde() {
        for a in [
            AgentApproval::Approved,
            AgentApproval::Pending,
            AgentApproval::Rejected,
        ] {
            assert_eq!(a.as_str().parse::<AgentApproval>().unwrap(), a);
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
        }
        for s in [
            AgentStatus::Online,
            AgentStatus::Offline,
            AgentStatus::Pending,
            AgentStatus::Rejected,
            AgentStatus::Revoked,
        ] {
            assert_eq!(s.as_str().parse::<AgentStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("Approved".parse::<AgentApproval>().is_err());
    }

    #[test]
    fn public_keys_serialise_as_hex() {
        let new = NewAgent {
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "1".into(),
            public_key: [0xab; 32],
        };
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["public_key"], "ab".repeat(32));
        let back: NewAgent = serde_json::from_value(json).unwrap();
        assert_eq!(back, new);
    }
}
