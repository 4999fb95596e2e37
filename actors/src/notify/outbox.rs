//! The notifier's outbox, as other features use it: [`enqueue`] writes a notification in the
//! caller's transaction (so it exists exactly when the decision to send it commits), and
//! [`nudge`], called after that commit, wakes the notifiers of this process at once instead of
//! at their next timer. Rows written by another process or node are found by the timer.

use std::sync::LazyLock;

use reap3r_store::{NewNotification, Tx, Uuid};
use tokio::sync::watch;

use super::NotificationMessage;
use crate::error::{DomainError, DomainResult};

/// Process-wide, because `enqueue` runs inside any feature's transaction and has no handle on
/// the actor; every running notifier subscribes to it.
static NUDGE: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Queues `message` for `integration_id` in the caller's transaction; returns the notification
/// id, which is its idempotency id on every attempt. Call [`nudge`] after the commit.
pub async fn enqueue(
    tx: &mut Tx,
    org_id: Uuid,
    integration_id: Uuid,
    message: &NotificationMessage,
    now_ms: i64,
) -> DomainResult<Uuid> {
    let text = serde_json::to_string(message)
        .map_err(|e| DomainError::invalid(format!("notification cannot be encoded: {e}")))?;
    let kind = serde_json::to_value(message.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let new = NewNotification {
        org_id,
        integration_id,
        kind,
        message: text,
        due_at: now_ms,
    };
    tx.enqueue_notification(&new, now_ms)
        .await
        .map_err(|e| DomainError::from_store(e, "integration"))
}

/// Wakes this process's notifiers: something was enqueued and committed.
pub fn nudge() {
    NUDGE.send_modify(|n| *n = n.wrapping_add(1));
}

/// What a notifier waits on for [`nudge`]s.
pub(crate) fn subscribe() -> watch::Receiver<u64> {
    NUDGE.subscribe()
}
