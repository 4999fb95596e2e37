//! API keys: long-lived credentials that act as their user within scopes. Only a hash of the
//! key is stored, plus a short prefix so people can tell their keys apart.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_json, get_opt_i64, get_str, get_uuid, to_json_text, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
}

/// A stored key. The hash is deliberately not exposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const KEY_COLS: &str =
    "id, org_id, user_id, name, prefix, scopes, expires_at, created_at, last_used_at";

fn key_from_row(row: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        user_id: get_uuid(row, "user_id")?,
        name: get_str(row, "name")?,
        prefix: get_str(row, "prefix")?,
        scopes: get_json(row, "scopes")?,
        expires_at: get_opt_i64(row, "expires_at")?,
        created_at: get_i64(row, "created_at")?,
        last_used_at: get_opt_i64(row, "last_used_at")?,
    })
}

impl Store {
    /// The key with this hash, whatever its expiry: the caller checks `expires_at`.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE key_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// The key with this id, whatever its expiry: the caller checks `expires_at`.
    pub async fn api_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// An organisation's keys, newest first.
    pub async fn list_api_keys(&self, org_id: Uuid) -> Result<Vec<ApiKey>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE org_id = $1 ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Moves `last_used_at` to `now_ms` when it is unset or older than `now_ms -
    /// min_interval_ms`.
    pub async fn touch_api_key(&self, id: Uuid, now_ms: i64, min_interval_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $2 \
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(uuid_text(id))
        .bind(now_ms)
        .bind(now_ms.saturating_sub(min_interval_ms.max(0)))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

impl Tx {
    /// Stores a key. `Conflict` if the hash exists, `Invalid` for an empty name or hash or an
    /// unknown organisation or user.
    pub async fn create_api_key(&mut self, new: &NewApiKey, now_ms: i64) -> Result<ApiKey> {
        let name = new.name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("API key name is empty".into()));
        }
        if new.key_hash.is_empty() {
            return Err(StoreError::Invalid("API key hash is empty".into()));
        }
        let sql = format!(
            "INSERT INTO api_keys (id, org_id, user_id, name, prefix, key_hash, scopes, \
             expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING {KEY_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(Uuid::new_v4()))
            .bind(uuid_text(new.org_id))
            .bind(uuid_text(new.user_id))
            .bind(name)
            .bind(&new.prefix)
            .bind(&new.key_hash)
            .bind(to_json_text(&new.scopes, "scopes")?)
            .bind(new.expires_at)
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| {
                map_constraint(
                    e,
                    "API key already exists",
                    "organisation or user does not exist",
                )
            })?;
        key_from_row(&row)
    }

    /// Deletes a key of `org_id`; `NotFound` if it is not one of that organisation's.
    pub async fn delete_api_key(&mut self, org_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
