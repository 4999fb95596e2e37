//! What the repository tests share beyond `support`: new agents, enrolment tokens, and agents
//! enrolled through a fresh token.

pub(crate) use std::collections::HashSet;
pub(crate) use std::fmt::Debug;

pub(crate) use crate::support::*;
pub(crate) use anyhow::Result;
pub(crate) use reap3r_store::{
    Agent, AgentApproval, AgentHello, AgentStatus, Backend, ChainReport, NewAgent, NewAuditEntry,
    NewEnrolmentToken, NewUser, Store, StoreError, TokenRefusal, Uuid,
};
pub(crate) use reap3r_testkit::TestDatabase;
pub(crate) use serde_json::json;

pub(crate) fn new_agent(hostname: &str) -> NewAgent {
    NewAgent {
        hostname: hostname.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
        public_key: *blake3::hash(hostname.as_bytes()).as_bytes(),
    }
}

pub(crate) fn token(org_id: Uuid, secret: &str) -> NewEnrolmentToken {
    NewEnrolmentToken {
        org_id,
        token_hash: hash_of(secret),
        label: Some(format!("label {secret}")),
        expires_at: None,
        max_uses: None,
        require_approval: false,
        created_by: Some("admin@example.com".into()),
    }
}

/// Enrols an agent through a fresh token of the given kind.
pub(crate) async fn enrolled(
    store: &Store,
    org: Uuid,
    hostname: &str,
    approval: bool,
) -> Result<Agent> {
    let secret = format!("secret-{hostname}-{}", Uuid::new_v4());
    let mut t = token(org, &secret);
    t.require_approval = approval;
    create_enrolment_token(store, &t, T0).await?;
    Ok(enrol_agent(store, &hash_of(&secret), &new_agent(hostname), T0).await?)
}
