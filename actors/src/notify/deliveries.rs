//! The delivery log, as operators see it: notifications with their state, attempts, last
//! error and idempotency id; and putting a dead letter back in the queue.

use reap3r_store::{Notification, NotificationFilter, NotificationState, StoreError, Uuid};
use serde_json::json;

use super::outbox;
use crate::access::Caller;
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

pub use reap3r_store::MAX_NOTIFICATION_PAGE;

/// The caller's organisation's notifications, newest first.
pub async fn list_notifications(
    domain: &Domain,
    caller: &Caller,
    state: Option<NotificationState>,
    integration_id: Option<Uuid>,
    limit: i64,
) -> DomainResult<Vec<Notification>> {
    if !(1..=MAX_NOTIFICATION_PAGE).contains(&limit) {
        return Err(DomainError::invalid(format!(
            "limit must be between 1 and {MAX_NOTIFICATION_PAGE}"
        )));
    }
    let filter = NotificationFilter {
        state,
        integration_id,
        limit,
    };
    Ok(domain
        .store
        .list_notifications(caller.org_id, &filter)
        .await?)
}

/// Queues a dead-lettered notification again (same id, so receivers still see one message),
/// with a fresh count of attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryNotification {
    pub id: Uuid,
}

impl RetryNotification {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Notification> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let row = tx
            .retry_dead_notification(caller.org_id, self.id, now)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(why) => DomainError::Conflict(why),
                other => DomainError::from_store(other, "notification"),
            })?;
        audit::record(
            &mut tx,
            caller,
            "alert_notification.retry",
            Some(format!("alert_notification:{}", row.id)),
            json!({ "integration_id": row.integration_id }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        outbox::nudge();
        Ok(row)
    }
}
