//! `vault_access_log`: who touched a secret, when, how (list, reveal, use, version, share, …),
//! from where and why. Rows outlive the secret.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_opt_i64, get_opt_str, get_str, get_uuid, uuid_text, values_rows};
use crate::error::Result;
use crate::{Store, Tx};

/// Largest page of the access log.
pub const MAX_ACCESS_LOG_PAGE: i64 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecretAccess {
    pub org_id: Uuid,
    pub secret_id: Uuid,
    pub version: Option<i64>,
    pub actor: String,
    pub action: String,
    pub origin: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretAccess {
    pub id: Uuid,
    pub org_id: Uuid,
    pub secret_id: Uuid,
    pub version: Option<i64>,
    pub actor: String,
    pub action: String,
    pub origin: Option<String>,
    pub reason: Option<String>,
    pub at: i64,
}

const COLS: &str = "id, org_id, secret_id, version, actor, action, origin, reason, at";
/// Rows per INSERT: 9 parameters each, under 200 parameters a statement.
const CHUNK: usize = 20;

fn from_row(row: &AnyRow) -> Result<SecretAccess> {
    Ok(SecretAccess {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        secret_id: get_uuid(row, "secret_id")?,
        version: get_opt_i64(row, "version")?,
        actor: get_str(row, "actor")?,
        action: get_str(row, "action")?,
        origin: get_opt_str(row, "origin")?,
        reason: get_opt_str(row, "reason")?,
        at: get_i64(row, "at")?,
    })
}

impl Tx {
    /// Appends access log rows, in the transaction of what they record.
    pub async fn log_secret_access(
        &mut self,
        entries: &[NewSecretAccess],
        now_ms: i64,
    ) -> Result<()> {
        const TYPES: [&str; 9] = [
            "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT",
        ];
        for chunk in entries.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO vault_access_log ({COLS}) VALUES {}",
                values_rows(1, chunk.len(), &TYPES)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                query = query
                    .bind(uuid_text(Uuid::now_v7()))
                    .bind(uuid_text(e.org_id))
                    .bind(uuid_text(e.secret_id))
                    .bind(e.version)
                    .bind(e.actor.clone())
                    .bind(e.action.clone())
                    .bind(e.origin.clone())
                    .bind(e.reason.clone())
                    .bind(now_ms);
            }
            query.execute(self.conn()).await?;
        }
        Ok(())
    }
}

impl Store {
    /// A page of one secret's access log, newest first; `before` is the last id of the page
    /// before (ids are time-ordered).
    pub async fn secret_access_log(
        &self,
        org_id: Uuid,
        secret_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<SecretAccess>> {
        let sql = format!(
            "SELECT {COLS} FROM vault_access_log WHERE secret_id = $1 AND org_id = $2 \
             AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(secret_id))
            .bind(uuid_text(org_id))
            .bind(before.map(uuid_text).unwrap_or_default())
            .bind(limit.clamp(1, MAX_ACCESS_LOG_PAGE))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}
