//! What every store test crate shares: a store of each available backend, the fixed "now",
//! the `check` that names backend and case, error kinds for table-driven cases, and test setup
//! over the store's transactional writes: each of those helpers runs one `Tx` method in a
//! transaction of its own and commits it, with the arguments the tests read best (an agent's
//! organisation is looked up from the agent). Production code goes through the domain
//! operations instead, which add the audit record to the same transaction.

#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::fmt::Debug;

use reap3r_store::{
    Agent, AgentApproval, AgentPlacement, Backend, EnrolmentToken, Group, GroupKind, GroupUpdate,
    NewAgent, NewEnrolmentToken, NewGroup, Org, OrgAssignment, Result, Store, StoreError, Tx, Uuid,
};
use reap3r_testkit::TestDatabase;

/// A fixed "now"; the store never reads the clock, so tests pick their own times.
pub const T0: i64 = 1_700_000_000_000;

/// Compares one case's outcome, naming backend and case when it differs.
pub fn check<T: PartialEq + Debug>(backend: Backend, case: &str, got: T, want: T) {
    assert_eq!(got, want, "[{backend}] {case}");
}

/// Every available backend, freshly created and migrated.
pub async fn stores() -> anyhow::Result<Vec<(TestDatabase, Store)>> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await? {
        let store = db.open().await?;
        assert_eq!(store.backend(), db.backend());
        out.push((db, store));
    }
    Ok(out)
}

/// The error's kind as a short word, for table-driven cases.
pub fn kind<T: Debug>(result: Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound) => "not_found",
        Err(StoreError::Conflict(_)) => "conflict",
        Err(StoreError::Invalid(_)) => "invalid",
        Err(e) => {
            eprintln!("unexpected error {e:?}");
            "unexpected"
        }
    }
}

pub fn invalid_message<T: Debug>(result: Result<T>) -> String {
    match result {
        Err(StoreError::Invalid(m)) => m,
        other => format!("expected Invalid, got {other:?}"),
    }
}

/// A secret's hash as the store keeps it (BLAKE3 hex).
pub fn hash_of(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

async fn commit<T>(tx: Tx, value: Result<T>) -> Result<T> {
    let value = value?;
    tx.commit().await?;
    Ok(value)
}

pub async fn create_org(store: &Store, name: &str, now_ms: i64) -> Result<Org> {
    create_org_under(store, name, None, now_ms).await
}

pub async fn create_org_under(
    store: &Store,
    name: &str,
    parent_org_id: Option<Uuid>,
    now_ms: i64,
) -> Result<Org> {
    let mut tx = store.begin().await?;
    let value = tx.create_org(name, parent_org_id, now_ms).await;
    commit(tx, value).await
}

pub async fn assign_user_to_org(
    store: &Store,
    user_id: Uuid,
    org_id: Uuid,
    role: &str,
    now_ms: i64,
) -> Result<OrgAssignment> {
    let mut tx = store.begin().await?;
    let value = tx.assign_user_to_org(user_id, org_id, role, now_ms).await;
    commit(tx, value).await
}

pub async fn unassign_user_from_org(store: &Store, user_id: Uuid, org_id: Uuid) -> Result<()> {
    let mut tx = store.begin().await?;
    let value = tx.unassign_user_from_org(user_id, org_id).await;
    commit(tx, value).await
}

pub async fn create_enrolment_token(
    store: &Store,
    new: &NewEnrolmentToken,
    now_ms: i64,
) -> Result<EnrolmentToken> {
    let mut tx = store.begin().await?;
    let value = tx.create_enrolment_token(new, now_ms).await;
    commit(tx, value).await
}

pub async fn revoke_enrolment_token(
    store: &Store,
    org_id: Uuid,
    id: Uuid,
) -> Result<EnrolmentToken> {
    let mut tx = store.begin().await?;
    let value = tx.revoke_enrolment_token(org_id, id).await;
    commit(tx, value).await
}

pub async fn delete_enrolment_token(store: &Store, org_id: Uuid, id: Uuid) -> Result<()> {
    let mut tx = store.begin().await?;
    let value = tx.delete_enrolment_token(org_id, id).await;
    commit(tx, value).await
}

pub async fn enrol_agent(
    store: &Store,
    token_hash: &str,
    new: &NewAgent,
    now_ms: i64,
) -> Result<Agent> {
    let mut tx = store.begin().await?;
    let value = tx.enrol_agent(token_hash, new, now_ms).await;
    commit(tx, value).await
}

/// The organisation of agent `id`; `NotFound` if there is no such agent.
async fn agent_org(store: &Store, id: Uuid) -> Result<Uuid> {
    Ok(store.agent(id).await?.ok_or(StoreError::NotFound)?.org_id)
}

pub async fn set_agent_approval(store: &Store, id: Uuid, approval: AgentApproval) -> Result<Agent> {
    let org_id = agent_org(store, id).await?;
    let mut tx = store.begin().await?;
    let value = tx.set_agent_approval(org_id, id, approval).await;
    commit(tx, value).await
}

pub async fn revoke_agent(store: &Store, id: Uuid) -> Result<Agent> {
    let org_id = agent_org(store, id).await?;
    let mut tx = store.begin().await?;
    let value = tx.revoke_agent(org_id, id).await;
    commit(tx, value).await
}

pub async fn delete_agent(store: &Store, org_id: Uuid, id: Uuid) -> Result<()> {
    let mut tx = store.begin().await?;
    let value = tx.delete_agent(org_id, id).await;
    commit(tx, value).await
}

pub async fn create_group(
    store: &Store,
    kind: GroupKind,
    org_id: Uuid,
    new: &NewGroup,
    now_ms: i64,
) -> Result<Group> {
    let mut tx = store.begin().await?;
    let value = tx.create_group(kind, org_id, new, now_ms).await;
    commit(tx, value).await
}

pub async fn update_group(
    store: &Store,
    kind: GroupKind,
    org_id: Uuid,
    id: Uuid,
    update: &GroupUpdate,
    now_ms: i64,
) -> Result<Group> {
    let mut tx = store.begin().await?;
    let value = tx.update_group(kind, org_id, id, update, now_ms).await;
    commit(tx, value).await
}

pub async fn delete_group(store: &Store, kind: GroupKind, org_id: Uuid, id: Uuid) -> Result<()> {
    let mut tx = store.begin().await?;
    let value = tx.delete_group(kind, org_id, id).await;
    commit(tx, value).await
}

pub async fn tag_agent(store: &Store, org_id: Uuid, agent_id: Uuid, tag_id: Uuid) -> Result<()> {
    let mut tx = store.begin().await?;
    let value = tx.tag_agent(org_id, agent_id, tag_id).await;
    commit(tx, value).await
}

pub async fn untag_agent(store: &Store, org_id: Uuid, agent_id: Uuid, tag_id: Uuid) -> Result<()> {
    let mut tx = store.begin().await?;
    let value = tx.untag_agent(org_id, agent_id, tag_id).await;
    commit(tx, value).await
}

pub async fn move_agent(
    store: &Store,
    org_id: Uuid,
    agent_id: Uuid,
    placement: &AgentPlacement,
) -> Result<Agent> {
    let mut tx = store.begin().await?;
    let value = tx.move_agent(org_id, agent_id, placement).await;
    commit(tx, value).await
}
