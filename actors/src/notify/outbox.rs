//! STAND-IN for the notifier's outbox (the notifier branch owns the real one and replaces this
//! file when it is merged). It has the contract's exact signature so routing compiles and its
//! enqueue happens inside routing's transaction, but it writes nothing: routing's tests assert
//! on what routing decided (its `notify_routing_sent` log), not on this.

use reap3r_store::{Tx, Uuid};

use crate::error::DomainResult;
use crate::notify::NotificationMessage;

/// Queues `message` for `integration_id` in `tx`; returns the notification's idempotency id.
/// Stand-in: returns a fresh id and stores nothing.
pub async fn enqueue(
    tx: &mut Tx,
    org_id: Uuid,
    integration_id: Uuid,
    message: &NotificationMessage,
    now_ms: i64,
) -> DomainResult<Uuid> {
    let _ = (tx, org_id, integration_id, message, now_ms);
    Ok(Uuid::now_v7())
}
