//! Filing agents: tagging and untagging, and moving an agent to a folder, site or company.

use reap3r_store::{Agent, AgentPlacement, Uuid};
use serde_json::json;

use crate::access::Caller;
use crate::enrolment::agent_target;
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// Puts a tag on an agent (idempotent); both must be the caller's organisation's.
#[derive(Debug, Clone, Copy)]
pub struct TagAgent {
    pub agent_id: Uuid,
    pub tag_id: Uuid,
}

impl TagAgent {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.tag_agent(caller.org_id, self.agent_id, self.tag_id)
            .await
            .map_err(|e| DomainError::from_store(e, "resource"))?;
        audit::record(
            &mut tx,
            caller,
            "agent.tag",
            Some(agent_target(self.agent_id)),
            json!({ "tag_id": self.tag_id }),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// Takes a tag off an agent (idempotent); both must be the caller's organisation's.
#[derive(Debug, Clone, Copy)]
pub struct UntagAgent {
    pub agent_id: Uuid,
    pub tag_id: Uuid,
}

impl UntagAgent {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.untag_agent(caller.org_id, self.agent_id, self.tag_id)
            .await
            .map_err(|e| DomainError::from_store(e, "resource"))?;
        audit::record(
            &mut tx,
            caller,
            "agent.untag",
            Some(agent_target(self.agent_id)),
            json!({ "tag_id": self.tag_id }),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// Files an agent under a folder, site and company: a `None` field of the placement leaves
/// it as it is, `Some(None)` clears it.
#[derive(Debug, Clone)]
pub struct MoveAgent {
    pub agent_id: Uuid,
    pub placement: AgentPlacement,
}

impl MoveAgent {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Agent> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let agent = tx
            .move_agent(caller.org_id, self.agent_id, &self.placement)
            .await
            .map_err(|e| DomainError::from_store(e, "agent"))?;
        audit::record(
            &mut tx,
            caller,
            "agent.move",
            Some(agent_target(agent.id)),
            json!({
                "folder_id": agent.folder_id,
                "site_id": agent.site_id,
                "company_id": agent.company_id,
            }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(agent)
    }
}
