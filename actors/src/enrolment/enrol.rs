//! An agent enrols: one use of its token is consumed, the agent is created in the token's
//! organisation and `agent.enrol` is audited, all in one transaction.

use reap3r_store::{Agent, AgentStatus, NewAgent};
use serde_json::json;

use super::{agent_target, hash_enrolment_token, token_target};
use crate::error::DomainResult;
use crate::{Domain, FleetEvent, audit};

/// What an agent presents at enrolment, with where it connected from (for the audit record).
#[derive(Debug, Clone)]
pub struct EnrolAgent {
    /// The token secret, as the agent sent it.
    pub token: String,
    pub agent: NewAgent,
    /// The agent's remote address.
    pub remote: String,
}

impl EnrolAgent {
    /// The enrolled agent. A token that cannot be used fails with
    /// `DomainError::Store(StoreError::Token(refusal))`.
    pub async fn run(self, domain: &Domain) -> DomainResult<Agent> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let agent = tx
            .enrol_agent(&hash_enrolment_token(&self.token), &self.agent, now)
            .await?;
        let pending = agent.status() == AgentStatus::Pending;
        let actor = agent
            .token_id
            .map(token_target)
            .unwrap_or_else(|| "enrollment_token:".to_owned());
        audit::record_as(
            &mut tx,
            Some(agent.org_id),
            &actor,
            "agent.enroll",
            Some(agent_target(agent.id)),
            json!({
                "hostname": agent.hostname,
                "pending_approval": pending,
                "remote": self.remote,
            }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        domain.events.publish(FleetEvent::AgentEnrolled {
            agent_id: agent.id,
            org_id: agent.org_id,
            hostname: agent.hostname.clone(),
            pending,
        });
        Ok(agent)
    }
}
