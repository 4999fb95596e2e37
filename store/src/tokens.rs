//! Enrolment tokens and the enrolment itself: consuming a token and creating the agent in one
//! transaction, so a token can never admit more agents than it allows.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::agents::{Agent, AgentApproval, NewAgent, insert_agent};
use crate::db::{bool_int, get_bool, get_i64, get_opt_i64, get_opt_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, TokenRefusal, map_constraint};
use crate::{Store, Tx};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEnrolmentToken {
    pub org_id: Uuid,
    /// Hex BLAKE3 of the token secret (64 hex digits); the secret itself never reaches the store.
    pub token_hash: String,
    pub label: Option<String>,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub require_approval: bool,
    pub created_by: Option<String>,
}

/// A stored token. The hash is deliberately not exposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentToken {
    pub id: Uuid,
    pub org_id: Uuid,
    pub label: Option<String>,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub revoked: bool,
    pub require_approval: bool,
    pub created_by: Option<String>,
    pub created_at: i64,
}

const TOKEN_COLS: &str = "id, org_id, label, expires_at, max_uses, uses, revoked, \
                          require_approval, created_by, created_at";

fn token_from_row(row: &AnyRow) -> Result<EnrolmentToken> {
    Ok(EnrolmentToken {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        label: get_opt_str(row, "label")?,
        expires_at: get_opt_i64(row, "expires_at")?,
        max_uses: get_opt_i64(row, "max_uses")?,
        uses: get_i64(row, "uses")?,
        revoked: get_bool(row, "revoked")?,
        require_approval: get_bool(row, "require_approval")?,
        created_by: get_opt_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
    })
}

/// Lower-cases a 64-digit hex hash, or `None` if it is not one.
fn normalise_hash(hash: &str) -> Option<String> {
    let hash = hash.trim();
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hash.to_ascii_lowercase())
}

impl EnrolmentToken {
    /// Why this token cannot be used at `now_ms`, if it cannot. Revocation wins over expiry,
    /// which wins over exhaustion, so the operator sees the most deliberate cause.
    pub fn refusal(&self, now_ms: i64) -> Option<TokenRefusal> {
        if self.revoked {
            Some(TokenRefusal::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now_ms) {
            Some(TokenRefusal::Expired)
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some(TokenRefusal::UsedUp)
        } else {
            None
        }
    }
}

impl Tx {
    /// Stores a new token (only its hash). `Invalid` for a hash that is not 64 hex digits or a
    /// `max_uses` below 1, `Conflict` if the hash exists, `Invalid` for an unknown organisation.
    pub async fn create_enrolment_token(
        &mut self,
        new: &NewEnrolmentToken,
        now_ms: i64,
    ) -> Result<EnrolmentToken> {
        let Some(hash) = normalise_hash(&new.token_hash) else {
            return Err(StoreError::Invalid(
                "token_hash must be 64 hex digits (BLAKE3)".into(),
            ));
        };
        if new.max_uses.is_some_and(|m| m < 1) {
            return Err(StoreError::Invalid("max_uses must be at least 1".into()));
        }
        let sql = format!(
            "INSERT INTO enrollment_tokens (id, org_id, token_hash, label, expires_at, max_uses, \
             require_approval, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {TOKEN_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(Uuid::new_v4()))
            .bind(uuid_text(new.org_id))
            .bind(hash)
            .bind(new.label.clone())
            .bind(new.expires_at)
            .bind(new.max_uses)
            .bind(bool_int(new.require_approval))
            .bind(new.created_by.clone())
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| {
                map_constraint(
                    e,
                    "token hash already exists",
                    "organisation does not exist",
                )
            })?;
        token_from_row(&row)
    }

    /// Revokes a token of `org_id` (idempotent) and returns it; `NotFound` if it is not one of
    /// that organisation's.
    pub async fn revoke_enrolment_token(
        &mut self,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<EnrolmentToken> {
        let sql = format!(
            "UPDATE enrollment_tokens SET revoked = 1 WHERE id = $1 AND org_id = $2 \
             RETURNING {TOKEN_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(&mut *self.conn())
            .await?
            .ok_or(StoreError::NotFound)?;
        token_from_row(&row)
    }

    /// Deletes a token of `org_id`; `NotFound` if it is not one of that organisation's. Agents
    /// it enrolled stay, with `token_id` cleared.
    pub async fn delete_enrolment_token(&mut self, org_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM enrollment_tokens WHERE id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Consumes one use of the token whose hash is `token_hash` and creates the agent, in this
    /// transaction (so the enrolment's audit record commits with both). The agent joins the
    /// token's organisation, pending if the token requires approval, approved otherwise.
    pub async fn enrol_agent(
        &mut self,
        token_hash: &str,
        new: &NewAgent,
        now_ms: i64,
    ) -> Result<Agent> {
        // A malformed hash cannot match anything; answer exactly as for an unknown token.
        let Some(hash) = normalise_hash(token_hash) else {
            return Err(StoreError::Token(TokenRefusal::Unknown));
        };
        let select = format!("SELECT {TOKEN_COLS} FROM enrollment_tokens WHERE token_hash = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .bind(hash.clone())
            .fetch_optional(&mut *self.conn())
            .await?
        else {
            return Err(StoreError::Token(TokenRefusal::Unknown));
        };
        let token = token_from_row(&row)?;
        if let Some(refusal) = token.refusal(now_ms) {
            return Err(StoreError::Token(refusal));
        }
        // The guard repeats the checks in the UPDATE itself: on PostgreSQL a concurrent
        // enrolment may have consumed the last use since our SELECT, and the row lock makes this
        // UPDATE re-evaluate the condition against the committed row. (SQLite already holds the
        // write lock from BEGIN IMMEDIATE, so there the guard is belt and braces.)
        let consumed = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1 \
             WHERE id = $1 AND revoked = 0 \
               AND (expires_at IS NULL OR expires_at > $2) \
               AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(uuid_text(token.id))
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await?;
        if consumed.rows_affected() == 0 {
            // Someone else won the race (or revoked the token) since our SELECT; re-read to
            // report the cause they left behind.
            let refusal = sqlx::query(sqlx::AssertSqlSafe(select))
                .bind(hash)
                .fetch_optional(&mut *self.conn())
                .await?
                .as_ref()
                .map(token_from_row)
                .transpose()?
                .and_then(|t| t.refusal(now_ms))
                .unwrap_or(TokenRefusal::UsedUp);
            return Err(StoreError::Token(refusal));
        }
        let approval = if token.require_approval {
            AgentApproval::Pending
        } else {
            AgentApproval::Approved
        };
        insert_agent(
            self.conn(),
            token.org_id,
            Some(token.id),
            approval,
            new,
            now_ms,
        )
        .await
    }
}

impl Store {
    /// Tokens, oldest first; all organisations when `org_id` is `None`.
    pub async fn list_enrolment_tokens(&self, org_id: Option<Uuid>) -> Result<Vec<EnrolmentToken>> {
        let rows = match org_id {
            Some(org) => {
                let sql = format!(
                    "SELECT {TOKEN_COLS} FROM enrollment_tokens WHERE org_id = $1 \
                     ORDER BY created_at, id"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(uuid_text(org))
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                let sql =
                    format!("SELECT {TOKEN_COLS} FROM enrollment_tokens ORDER BY created_at, id");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter().map(token_from_row).collect()
    }

    /// A token of `org_id`, if it is one of that organisation's.
    pub async fn enrolment_token(&self, org_id: Uuid, id: Uuid) -> Result<Option<EnrolmentToken>> {
        let sql =
            format!("SELECT {TOKEN_COLS} FROM enrollment_tokens WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_validated_and_lower_cased() {
        let upper = "AB".repeat(32);
        assert_eq!(normalise_hash(&upper), Some("ab".repeat(32)));
        assert_eq!(normalise_hash("abc"), None);
        assert_eq!(normalise_hash(&"zz".repeat(32)), None);
    }
}
