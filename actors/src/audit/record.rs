//! Writing the audit trail: every operation appends its record to the hash chain in the same
//! transaction as its change ([`record`]), and `Domain::commit` publishes the records as `audit`
//! events only once they are durable.

use reap3r_store::{NewAuditEntry, Tx, Uuid};

use crate::access::Caller;
use crate::error::DomainResult;

/// Appends the audit record of a change made by `caller` in its organisation, inside `tx`.
pub async fn record(
    tx: &mut Tx,
    caller: &Caller,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
    now_ms: i64,
) -> DomainResult<()> {
    record_as(
        tx,
        Some(caller.org_id),
        &caller.actor(),
        action,
        target,
        details,
        now_ms,
    )
    .await
}

/// Appends an audit record for an actor that is not a caller (an agent's enrolment token, the
/// system) or for another organisation than the caller's.
pub async fn record_as(
    tx: &mut Tx,
    org_id: Option<Uuid>,
    actor: &str,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
    now_ms: i64,
) -> DomainResult<()> {
    tx.append_audit(
        &NewAuditEntry {
            org_id,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target,
            details,
        },
        now_ms,
    )
    .await?;
    Ok(())
}
