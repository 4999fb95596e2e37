//! `alert_notifications`: the notifier's durable outbox and delivery log.
//!
//! A row is written in the transaction that decides to notify ([`Tx::enqueue_notification`]).
//! The notifier claims due rows ([`Tx::claim_notification`], a guarded update, so two nodes
//! never both send one attempt), and records each attempt's end ([`Tx::finish_attempt`],
//! guarded by the attempt number, so an attempt whose claim expired and was taken over cannot
//! overwrite the newer one). A claim that is never finished (the process died mid-send) is due
//! again once `claimed_until` passes.

use std::str::FromStr;

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{Conditions, get_i64, get_opt_i64, get_opt_str, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// Largest page of [`Store::list_notifications`].
pub const MAX_NOTIFICATION_PAGE: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationState {
    Pending,
    Sending,
    Delivered,
    Dead,
}

impl NotificationState {
    pub const ALL: [NotificationState; 4] = [
        NotificationState::Pending,
        NotificationState::Sending,
        NotificationState::Delivered,
        NotificationState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Sending => "sending",
            NotificationState::Delivered => "delivered",
            NotificationState::Dead => "dead",
        }
    }
}

impl FromStr for NotificationState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        NotificationState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("unknown notification state {s:?}")))
    }
}

/// One notification and how its delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Also the idempotency id sent with every attempt.
    pub id: Uuid,
    pub org_id: Uuid,
    pub integration_id: Uuid,
    /// Why it is sent (firing, resolved, test, ...).
    pub kind: String,
    /// The message as JSON.
    pub message: String,
    pub state: NotificationState,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub claimed_until: Option<i64>,
    pub last_error: Option<String>,
    /// The receiver's last answer (HTTP status line, SMTP reply).
    pub last_answer: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub org_id: Uuid,
    pub integration_id: Uuid,
    pub kind: String,
    pub message: String,
    /// When the first attempt is due.
    pub due_at: i64,
}

/// A row the notifier claimed: deliver it as attempt number `attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedNotification {
    pub notification: Notification,
    pub attempt: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    pub state: Option<NotificationState>,
    pub integration_id: Option<Uuid>,
    /// Newest first; at most [`MAX_NOTIFICATION_PAGE`].
    pub limit: i64,
}

const COLS: &str = "id, org_id, integration_id, kind, message, state, attempts, next_attempt_at, \
                    claimed_until, last_error, last_answer, created_at, updated_at, delivered_at";

fn from_row(row: &AnyRow) -> Result<Notification> {
    Ok(Notification {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        integration_id: get_uuid(row, "integration_id")?,
        kind: get_str(row, "kind")?,
        message: get_str(row, "message")?,
        state: get_str(row, "state")?.parse()?,
        attempts: get_i64(row, "attempts")?,
        next_attempt_at: get_i64(row, "next_attempt_at")?,
        claimed_until: get_opt_i64(row, "claimed_until")?,
        last_error: get_opt_str(row, "last_error")?,
        last_answer: get_opt_str(row, "last_answer")?,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_i64(row, "updated_at")?,
        delivered_at: get_opt_i64(row, "delivered_at")?,
    })
}

/// The condition under which a row may be claimed; `now` is the placeholder of the time.
fn due(now: &str) -> String {
    format!(
        "((state = 'pending' AND next_attempt_at <= {now}) \
         OR (state = 'sending' AND claimed_until <= {now}))"
    )
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    Delivered {
        answer: String,
    },
    /// Try again at `retry_at`.
    Retry {
        error: String,
        retry_at: i64,
    },
    /// The last attempt failed: dead letter.
    Dead {
        error: String,
    },
}

impl Tx {
    /// Writes a pending notification in the caller's transaction; returns its id. The
    /// integration must belong to the same organisation (`NotFound` otherwise).
    pub async fn enqueue_notification(
        &mut self,
        new: &NewNotification,
        now_ms: i64,
    ) -> Result<Uuid> {
        let id = Uuid::now_v7();
        let done = sqlx::query(
            "INSERT INTO alert_notifications (id, org_id, integration_id, kind, message, state, \
             attempts, next_attempt_at, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, 'pending', 0, $6, $7, $7 \
             WHERE EXISTS (SELECT 1 FROM alert_integrations WHERE id = $3 AND org_id = $2)",
        )
        .bind(uuid_text(id))
        .bind(uuid_text(new.org_id))
        .bind(uuid_text(new.integration_id))
        .bind(&new.kind)
        .bind(&new.message)
        .bind(new.due_at)
        .bind(now_ms)
        .execute(self.conn())
        .await
        .map_err(|e| map_constraint(e, "notification exists", "integration not found"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(id)
    }

    /// Claims one due row for an attempt until `claimed_until`; `None` if it is not due (any
    /// more: another node took it).
    pub async fn claim_notification(
        &mut self,
        id: Uuid,
        now_ms: i64,
        claimed_until: i64,
    ) -> Result<Option<ClaimedNotification>> {
        let sql = format!(
            "UPDATE alert_notifications SET state = 'sending', attempts = attempts + 1, \
             claimed_until = $3, updated_at = $2 WHERE id = $1 AND {} RETURNING {COLS}",
            due("$2")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(now_ms)
            .bind(claimed_until)
            .fetch_optional(self.conn())
            .await?;
        let Some(notification) = row.as_ref().map(from_row).transpose()? else {
            return Ok(None);
        };
        Ok(Some(ClaimedNotification {
            attempt: notification.attempts,
            notification,
        }))
    }

    /// Records the end of attempt `attempt`; `false` if that attempt is no longer the row's
    /// current one (its claim expired and another attempt took over).
    pub async fn finish_attempt(
        &mut self,
        id: Uuid,
        attempt: i64,
        end: &AttemptEnd,
        now_ms: i64,
    ) -> Result<bool> {
        let (state, next, error, answer, delivered_at) = match end {
            AttemptEnd::Delivered { answer } => (
                "delivered",
                now_ms,
                None,
                Some(answer.as_str()),
                Some(now_ms),
            ),
            AttemptEnd::Retry { error, retry_at } => {
                ("pending", *retry_at, Some(error.as_str()), None, None)
            }
            AttemptEnd::Dead { error } => ("dead", now_ms, Some(error.as_str()), None, None),
        };
        let done = sqlx::query(
            "UPDATE alert_notifications SET state = $3, next_attempt_at = $4, \
             claimed_until = NULL, last_error = COALESCE($5, last_error), \
             last_answer = COALESCE($6, last_answer), delivered_at = $7, updated_at = $8 \
             WHERE id = $1 AND attempts = $2 AND state = 'sending'",
        )
        .bind(uuid_text(id))
        .bind(attempt)
        .bind(state)
        .bind(next)
        .bind(error)
        .bind(answer)
        .bind(delivered_at)
        .bind(now_ms)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts a dead letter of `org_id` back in the queue, due now, with a fresh attempt count.
    pub async fn retry_dead_notification(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        now_ms: i64,
    ) -> Result<Notification> {
        let sql = format!(
            "UPDATE alert_notifications SET state = 'pending', attempts = 0, \
             next_attempt_at = $3, updated_at = $3 \
             WHERE id = $1 AND org_id = $2 AND state = 'dead' RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(now_ms)
            .fetch_optional(self.conn())
            .await?;
        if let Some(row) = row {
            return from_row(&row);
        }
        let exists =
            sqlx::query("SELECT 1 AS one FROM alert_notifications WHERE id = $1 AND org_id = $2")
                .bind(uuid_text(id))
                .bind(uuid_text(org_id))
                .fetch_optional(self.conn())
                .await?
                .is_some();
        Err(if exists {
            StoreError::Conflict("only a dead-lettered notification can be retried".into())
        } else {
            StoreError::NotFound
        })
    }
}

impl Store {
    /// Ids of rows due at `now_ms` (oldest due first) with their integration, for the notifier
    /// to pick from before it claims them one by one.
    ///
    /// Two queries, not one with `OR`: pending rows come off the `(state, next_attempt_at)`
    /// index in order and the scan stops at `limit`; expired claims are few (at most the
    /// attempts in flight). One query with `OR` sorted every due row on every call, which made
    /// a backlog of 10,000 quadratic.
    pub async fn due_notifications(&self, now_ms: i64, limit: i64) -> Result<Vec<(Uuid, Uuid)>> {
        let mut due: Vec<(i64, Uuid, Uuid)> = Vec::new();
        for sql in [
            "SELECT id, integration_id, next_attempt_at AS due_at FROM alert_notifications \
             WHERE state = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $2",
            "SELECT id, integration_id, claimed_until AS due_at FROM alert_notifications \
             WHERE state = 'sending' AND claimed_until <= $1 \
             ORDER BY claimed_until, id LIMIT $2",
        ] {
            let rows = sqlx::query(sql)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
            for r in &rows {
                due.push((
                    get_i64(r, "due_at")?,
                    get_uuid(r, "id")?,
                    get_uuid(r, "integration_id")?,
                ));
            }
        }
        due.sort();
        due.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(due.into_iter().map(|(_, id, i)| (id, i)).collect())
    }

    /// When the next row falls due (a pending row's next attempt, or a claim that expires):
    /// two index lookups, not a scan of every waiting row.
    pub async fn next_notification_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(due) AS due FROM ( \
               SELECT MIN(next_attempt_at) AS due FROM alert_notifications \
                 WHERE state = 'pending' \
               UNION ALL \
               SELECT MIN(claimed_until) AS due FROM alert_notifications \
                 WHERE state = 'sending' \
             ) AS next_due",
        )
        .fetch_one(self.pool())
        .await?;
        get_opt_i64(&row, "due")
    }

    /// One notification of an organisation.
    pub async fn notification(&self, org_id: Uuid, id: Uuid) -> Result<Option<Notification>> {
        let sql = format!("SELECT {COLS} FROM alert_notifications WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// An organisation's notifications, newest first.
    pub async fn list_notifications(
        &self,
        org_id: Uuid,
        filter: &NotificationFilter,
    ) -> Result<Vec<Notification>> {
        let mut f = Conditions::default();
        let org = f.text(uuid_text(org_id));
        f.and(format!("org_id = {org}"));
        if let Some(state) = filter.state {
            let p = f.text(state.as_str());
            f.and(format!("state = {p}"));
        }
        if let Some(integration) = filter.integration_id {
            let p = f.text(uuid_text(integration));
            f.and(format!("integration_id = {p}"));
        }
        let limit = f.int(filter.limit.clamp(1, MAX_NOTIFICATION_PAGE));
        let sql = format!(
            "SELECT {COLS} FROM alert_notifications{} ORDER BY created_at DESC, id DESC LIMIT {limit}",
            f.where_sql()
        );
        let rows = f
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }
}
