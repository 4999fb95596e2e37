//! What alert rules need to know of agents to match scopes and describe alerts: each agent's
//! organisation, hostname, folder, tags and presence, read in two queries for a whole fleet
//! (or for one agent, when one changed).

use uuid::Uuid;

use crate::Store;
use crate::db::{get_i64, get_opt_i64, get_opt_uuid, get_str, get_uuid, uuid_text};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertAgent {
    pub id: Uuid,
    pub org_id: Uuid,
    pub hostname: String,
    pub folder_id: Option<Uuid>,
    /// (tag id, tag name).
    pub tags: Vec<(Uuid, String)>,
    pub connected: bool,
    /// Approved, not revoked.
    pub allowed: bool,
    /// Waiting for approval (not revoked).
    pub pending: bool,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
}

impl Store {
    /// Every agent (of `org_id`, or of every organisation) with its tags.
    pub async fn alert_agents(&self, org_id: Option<Uuid>) -> Result<Vec<AlertAgent>> {
        self.alert_agents_where(org_id, None).await
    }

    /// One agent of `org_id` with its tags; `None` if it is not (or no longer) there.
    pub async fn alert_agent(&self, org_id: Uuid, id: Uuid) -> Result<Option<AlertAgent>> {
        Ok(self.alert_agents_where(Some(org_id), Some(id)).await?.pop())
    }

    async fn alert_agents_where(
        &self,
        org_id: Option<Uuid>,
        agent_id: Option<Uuid>,
    ) -> Result<Vec<AlertAgent>> {
        let org = org_id.map(uuid_text);
        let agent = agent_id.map(uuid_text);
        let rows = sqlx::query(
            "SELECT id, org_id, hostname, folder_id, connected, approval, revoked, enrolled_at, \
             last_seen FROM agents WHERE ($1 IS NULL OR org_id = $1) \
             AND ($2 IS NULL OR id = $2) ORDER BY id",
        )
        .bind(org.clone())
        .bind(agent.clone())
        .fetch_all(self.pool())
        .await?;
        let mut agents = Vec::with_capacity(rows.len());
        let mut index = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let revoked = get_i64(row, "revoked")? != 0;
            let approval = get_str(row, "approval")?;
            let agent = AlertAgent {
                id: get_uuid(row, "id")?,
                org_id: get_uuid(row, "org_id")?,
                hostname: get_str(row, "hostname")?,
                folder_id: get_opt_uuid(row, "folder_id")?,
                tags: Vec::new(),
                connected: get_i64(row, "connected")? != 0,
                allowed: !revoked && approval == "approved",
                pending: !revoked && approval == "pending",
                enrolled_at: get_i64(row, "enrolled_at")?,
                last_seen: get_opt_i64(row, "last_seen")?,
            };
            index.insert(agent.id, agents.len());
            agents.push(agent);
        }
        let tags = sqlx::query(
            "SELECT l.agent_id AS agent_id, t.id AS tag_id, t.name AS name FROM agent_tags l \
             JOIN tags t ON t.id = l.tag_id WHERE ($1 IS NULL OR t.org_id = $1) \
             AND ($2 IS NULL OR l.agent_id = $2) ORDER BY t.name",
        )
        .bind(org)
        .bind(agent)
        .fetch_all(self.pool())
        .await?;
        for row in &tags {
            if let Some(&i) = index.get(&get_uuid(row, "agent_id")?) {
                agents[i]
                    .tags
                    .push((get_uuid(row, "tag_id")?, get_str(row, "name")?));
            }
        }
        Ok(agents)
    }
}
