//! Operators' decisions on enrolled agents: approve, reject, revoke, delete. Each writes its
//! change and audit record in one transaction, then withdraws the live session of an agent that
//! may no longer be connected.

use reap3r_store::{Agent, AgentApproval, Uuid};
use serde_json::json;

use crate::access::Caller;
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// Closes an agent's live session once its access is withdrawn; `reason` is what the agent is
/// told. The API passes the node's hook; the CLI, which holds no sessions, passes a no-op (the
/// node that holds the session notices at its next revocation check).
pub type Withdraw<'a> = &'a (dyn Fn(Uuid, &str) + Send + Sync);

/// How an agent is named in the audit log.
pub fn agent_target(id: Uuid) -> String {
    format!("agent:{id}")
}

/// Approves (it is let in at its next connection attempt) or rejects (a live session is
/// closed) an agent of the caller's organisation. A revoked agent stays revoked: `Conflict`.
#[derive(Debug, Clone, Copy)]
pub struct SetAgentApproval {
    pub id: Uuid,
    pub approval: AgentApproval,
}

impl SetAgentApproval {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        withdraw: Withdraw<'_>,
    ) -> DomainResult<Agent> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let before = tx
            .agent_in_org(caller.org_id, self.id)
            .await?
            .ok_or(DomainError::NotFound("agent"))?;
        if before.revoked {
            return Err(DomainError::conflict("the agent is revoked"));
        }
        let agent = tx
            .set_agent_approval(caller.org_id, self.id, self.approval)
            .await
            .map_err(|e| DomainError::from_store(e, "agent"))?;
        let action = match self.approval {
            AgentApproval::Approved => "agent.approve",
            AgentApproval::Rejected | AgentApproval::Pending => "agent.reject",
        };
        audit::record(
            &mut tx,
            caller,
            action,
            Some(agent_target(agent.id)),
            json!({ "from": before.approval.as_str(), "to": self.approval.as_str() }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        if self.approval != AgentApproval::Approved {
            withdraw(agent.id, self.approval.as_str());
        }
        Ok(agent)
    }
}

/// Revokes an agent of the caller's organisation for good: a live session is closed and it can
/// never connect again.
#[derive(Debug, Clone, Copy)]
pub struct RevokeAgent {
    pub id: Uuid,
}

impl RevokeAgent {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        withdraw: Withdraw<'_>,
    ) -> DomainResult<Agent> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let agent = tx
            .revoke_agent(caller.org_id, self.id)
            .await
            .map_err(|e| DomainError::from_store(e, "agent"))?;
        audit::record(
            &mut tx,
            caller,
            "agent.revoke",
            Some(agent_target(agent.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        withdraw(agent.id, "revoked");
        Ok(agent)
    }
}

/// Deletes an agent of the caller's organisation: its record goes and its live session is
/// closed (a deleted agent could enrol again with a valid token; revoke keeps it out).
#[derive(Debug, Clone, Copy)]
pub struct DeleteAgent {
    pub id: Uuid,
}

impl DeleteAgent {
    /// The agent as it was before deletion.
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        withdraw: Withdraw<'_>,
    ) -> DomainResult<Agent> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let agent = tx
            .agent_in_org(caller.org_id, self.id)
            .await?
            .ok_or(DomainError::NotFound("agent"))?;
        tx.delete_agent(caller.org_id, agent.id)
            .await
            .map_err(|e| DomainError::from_store(e, "agent"))?;
        audit::record(
            &mut tx,
            caller,
            "agent.delete",
            Some(agent_target(agent.id)),
            json!({ "hostname": agent.hostname }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        withdraw(agent.id, "deleted");
        Ok(agent)
    }
}
