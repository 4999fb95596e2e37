//! Login attempts, successful or not: the record behind lockouts (failures per email and per
//! source address in a window) and the administrators' login history.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{
    Conditions, bool_int, get_bool, get_i64, get_opt_str, get_opt_uuid, get_str, get_uuid,
    uuid_text,
};
use crate::error::{Result, StoreError};
use crate::{Store, Tx};

/// Longest email kept (the RFC 5321 path limit is 256; anything longer is junk anyway).
pub const MAX_LOGIN_EMAIL_CHARS: usize = 320;
/// Longest detail kept.
pub const MAX_LOGIN_DETAIL_CHARS: usize = 500;
/// Most events [`Store::list_login_events`] returns in one call.
pub const MAX_LOGIN_EVENT_PAGE: i64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLoginEvent {
    pub org_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub email: String,
    pub source_ip: String,
    pub success: bool,
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginEvent {
    pub id: Uuid,
    pub ts: i64,
    pub org_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub email: String,
    pub source_ip: String,
    pub success: bool,
    pub outcome: String,
    pub detail: Option<String>,
}

/// Which events [`Store::list_login_events`] returns. `since` and `until` are inclusive bounds
/// on `ts`; `before_ts` (a page cursor) is exclusive. `limit` is clamped to 1..=1000.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginEventFilter {
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub success: Option<bool>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_ts: Option<i64>,
    pub limit: i64,
}

const EVENT_COLS: &str = "id, ts, org_id, user_id, email, source_ip, success, outcome, detail";

/// The stored form of an email: trimmed, lower-cased, at most [`MAX_LOGIN_EMAIL_CHARS`].
fn stored_email(email: &str) -> String {
    email
        .trim()
        .to_lowercase()
        .chars()
        .take(MAX_LOGIN_EMAIL_CHARS)
        .collect()
}

fn event_from_row(row: &AnyRow) -> Result<LoginEvent> {
    Ok(LoginEvent {
        id: get_uuid(row, "id")?,
        ts: get_i64(row, "ts")?,
        org_id: get_opt_uuid(row, "org_id")?,
        user_id: get_opt_uuid(row, "user_id")?,
        email: get_str(row, "email")?,
        source_ip: get_str(row, "source_ip")?,
        success: get_bool(row, "success")?,
        outcome: get_str(row, "outcome")?,
        detail: get_opt_str(row, "detail")?,
    })
}

/// Inserts a login event, on the pool (failed attempts, which must count whatever happens next)
/// or inside the transaction of the session the login opens.
async fn insert_login_event<'e, E>(exec: E, new: &NewLoginEvent, now_ms: i64) -> Result<LoginEvent>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if new.outcome.trim().is_empty() {
        return Err(StoreError::Invalid("login outcome is empty".into()));
    }
    let event = LoginEvent {
        id: Uuid::new_v4(),
        ts: now_ms,
        org_id: new.org_id,
        user_id: new.user_id,
        email: stored_email(&new.email),
        source_ip: new.source_ip.clone(),
        success: new.success,
        outcome: new.outcome.clone(),
        detail: new
            .detail
            .as_deref()
            .map(|d| d.chars().take(MAX_LOGIN_DETAIL_CHARS).collect()),
    };
    let sql = format!(
        "INSERT INTO login_events ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(uuid_text(event.id))
        .bind(event.ts)
        .bind(event.org_id.map(uuid_text))
        .bind(event.user_id.map(uuid_text))
        .bind(&event.email)
        .bind(&event.source_ip)
        .bind(bool_int(event.success))
        .bind(&event.outcome)
        .bind(event.detail.clone())
        .execute(exec)
        .await?;
    Ok(event)
}

impl Tx {
    /// [`Store::record_login_event`] inside this transaction (a successful login, committed with
    /// its session and audit record).
    pub async fn record_login_event(
        &mut self,
        new: &NewLoginEvent,
        now_ms: i64,
    ) -> Result<LoginEvent> {
        insert_login_event(&mut *self.conn(), new, now_ms).await
    }
}

impl Store {
    /// Records a login attempt at `now_ms`. The email is stored trimmed and lower-cased; email
    /// and detail are cut to [`MAX_LOGIN_EMAIL_CHARS`] and [`MAX_LOGIN_DETAIL_CHARS`].
    pub async fn record_login_event(&self, new: &NewLoginEvent, now_ms: i64) -> Result<LoginEvent> {
        insert_login_event(self.pool(), new, now_ms).await
    }

    /// Failed attempts for `email` (any letter case) at or after `since_ms`.
    pub async fn count_login_failures_for_email(&self, email: &str, since_ms: i64) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM login_events WHERE email = $1 AND success = 0 AND ts >= $2",
        )
        .bind(stored_email(email))
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(get_i64(&row, "n")?).unwrap_or(0))
    }

    /// Failed attempts from `source_ip` at or after `since_ms`.
    pub async fn count_login_failures_for_ip(&self, source_ip: &str, since_ms: i64) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM login_events \
             WHERE source_ip = $1 AND success = 0 AND ts >= $2",
        )
        .bind(source_ip)
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(get_i64(&row, "n")?).unwrap_or(0))
    }

    /// An organisation's login events matching `filter`, newest first (ts, then id, descending).
    /// Attempts for unknown emails belong to no organisation and are not listed here.
    pub async fn list_login_events(
        &self,
        org_id: Uuid,
        filter: &LoginEventFilter,
    ) -> Result<Vec<LoginEvent>> {
        let mut c = Conditions::default();
        let p = c.text(uuid_text(org_id));
        c.and(format!("org_id = {p}"));
        if let Some(user_id) = filter.user_id {
            let p = c.text(uuid_text(user_id));
            c.and(format!("user_id = {p}"));
        }
        if let Some(email) = &filter.email {
            let p = c.text(stored_email(email));
            c.and(format!("email = {p}"));
        }
        if let Some(success) = filter.success {
            let p = c.int(bool_int(success));
            c.and(format!("success = {p}"));
        }
        if let Some(since) = filter.since {
            let p = c.int(since);
            c.and(format!("ts >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = c.int(until);
            c.and(format!("ts <= {p}"));
        }
        if let Some(before) = filter.before_ts {
            let p = c.int(before);
            c.and(format!("ts < {p}"));
        }
        let limit = c.int(filter.limit.clamp(1, MAX_LOGIN_EVENT_PAGE));
        let sql = format!(
            "SELECT {EVENT_COLS} FROM login_events{} ORDER BY ts DESC, id DESC LIMIT {limit}",
            c.where_sql()
        );
        let rows = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_capped() {
        assert_eq!(stored_email("  Bob@Example.COM "), "bob@example.com");
        assert_eq!(
            stored_email(&"x".repeat(1000)).chars().count(),
            MAX_LOGIN_EMAIL_CHARS
        );
    }
}
