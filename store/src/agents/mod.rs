//! Enrolled agents: identity, approval, revocation and the connection lease (`node_id`,
//! `connected`, `last_seen`) that tells which control-plane node holds each live agent.
//!
//! - [`records`]: the records, states, filters and counts;
//! - [`approval`]: operators' changes (approve, reject, revoke, delete) on [`Tx`](crate::Tx);
//! - [`presence`]: the connection lease, heartbeat times, and which connections must be dropped;
//! - [`queries`]: one agent, lists, filtered pages and counts.
//!
//! Here: what they share, the column list, the row mapping and the insert enrolment uses.

macro_rules! agent_cols {
    () => {
        "id, org_id, hostname, os, arch, agent_version, public_key, approval, revoked, connected, \
         node_id, capabilities, inventory, token_id, enrolled_at, last_seen, folder_id, site_id, \
         company_id"
    };
}

mod approval;
mod presence;
mod queries;
mod records;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection};
use uuid::Uuid;

use crate::db::{
    bool_int, get_bool, get_i64, get_json, get_opt_i64, get_opt_str, get_opt_uuid, get_str,
    get_uuid, to_json_text, uuid_text,
};
use crate::error::{Result, StoreError};

pub use records::{
    Agent, AgentApproval, AgentCursor, AgentFilter, AgentHello, AgentStats, AgentStatus,
    MAX_AGENT_PAGE, NewAgent,
};

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
