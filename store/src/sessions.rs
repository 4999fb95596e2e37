//! Login sessions with rotating refresh tokens (a reused refresh token revokes its session), and
//! the short-lived challenges that carry a login from the password step to the MFA step. Only
//! hashes of the secrets are stored.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_opt_i64, get_opt_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// Longest user agent kept; the rest is cut off.
const MAX_USER_AGENT_CHARS: usize = 500;

/// Reason recorded when a used refresh token comes back.
pub const REFRESH_REUSE_REASON: &str = "refresh_token_reuse";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuthSession {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub access_hash: String,
    pub access_expires_at: i64,
    pub refresh_hash: String,
    pub refresh_expires_at: i64,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A stored session. The token hashes are deliberately not exposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    /// When the user last proved a second factor again in this session (step-up).
    pub step_up_at: Option<i64>,
}

/// What [`Tx::rotate_refresh_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was good: it is now used, and the session carries the new access and refresh
    /// hashes and expiries.
    Rotated(AuthSession),
    /// The token had already been used: the session has been revoked, since either the caller
    /// or whoever used it first holds a stolen token.
    Reused {
        session_id: Uuid,
        user_id: Uuid,
    },
    Unknown,
    /// The session's refresh window has passed.
    Expired,
    /// The session was revoked (before this call).
    Revoked,
}

/// Where an MFA challenge stands after [`Store::mfa_challenge_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeCheck {
    /// The attempt was counted; `attempts` includes it.
    Open {
        user_id: Uuid,
        attempts: i64,
    },
    Unknown,
    Expired,
    Used,
    TooManyAttempts,
}

const SESSION_COLS: &str = "id, user_id, org_id, access_expires_at, refresh_expires_at, \
                            source_ip, user_agent, created_at, last_used_at, revoked_at, \
                            revoked_reason, step_up_at";

fn session_from_row(row: &AnyRow) -> Result<AuthSession> {
    Ok(AuthSession {
        id: get_uuid(row, "id")?,
        user_id: get_uuid(row, "user_id")?,
        org_id: get_uuid(row, "org_id")?,
        access_expires_at: get_i64(row, "access_expires_at")?,
        refresh_expires_at: get_i64(row, "refresh_expires_at")?,
        source_ip: get_opt_str(row, "source_ip")?,
        user_agent: get_opt_str(row, "user_agent")?,
        created_at: get_i64(row, "created_at")?,
        last_used_at: get_i64(row, "last_used_at")?,
        revoked_at: get_opt_i64(row, "revoked_at")?,
        revoked_reason: get_opt_str(row, "revoked_reason")?,
        step_up_at: get_opt_i64(row, "step_up_at")?,
    })
}

fn require_hash(hash: &str, what: &str) -> Result<()> {
    if hash.is_empty() {
        return Err(StoreError::Invalid(format!("{what} is empty")));
    }
    Ok(())
}

/// Revokes a session inside the caller's transaction; true if it was not revoked before.
async fn revoke_in(conn: &mut AnyConnection, id: Uuid, reason: &str, now_ms: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE auth_sessions SET revoked_at = $2, revoked_reason = $3 \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(uuid_text(id))
    .bind(now_ms)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A used refresh token came back: revokes its session (committed with the caller's transaction,
/// together with the audit record of the reuse).
async fn reused(
    conn: &mut AnyConnection,
    session_id: Uuid,
    user_id: Uuid,
    now_ms: i64,
) -> Result<RefreshOutcome> {
    revoke_in(conn, session_id, REFRESH_REUSE_REASON, now_ms).await?;
    tracing::warn!(%session_id, %user_id, "refresh token reused; session revoked");
    Ok(RefreshOutcome::Reused {
        session_id,
        user_id,
    })
}

/// One session by id, on the pool or inside a transaction.
async fn fetch_session<'e, E>(exec: E, id: Uuid) -> Result<Option<AuthSession>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {SESSION_COLS} FROM auth_sessions WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(uuid_text(id))
        .fetch_optional(exec)
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

impl Store {
    /// The session an access token belongs to, whatever its state: the caller checks
    /// `revoked_at` and `access_expires_at`.
    pub async fn session_by_access_hash(&self, access_hash: &str) -> Result<Option<AuthSession>> {
        let sql = format!("SELECT {SESSION_COLS} FROM auth_sessions WHERE access_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(access_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    pub async fn auth_session(&self, id: Uuid) -> Result<Option<AuthSession>> {
        fetch_session(self.pool(), id).await
    }

    /// Moves `last_used_at` to `now_ms`, but only when it is older than `now_ms -
    /// min_interval_ms`, so a busy client does not cause a write per request.
    pub async fn touch_auth_session(
        &self,
        id: Uuid,
        now_ms: i64,
        min_interval_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE auth_sessions SET last_used_at = $2 WHERE id = $1 AND last_used_at < $3",
        )
        .bind(uuid_text(id))
        .bind(now_ms)
        .bind(now_ms.saturating_sub(min_interval_ms.max(0)))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A user's sessions, live and revoked, newest first.
    pub async fn list_user_sessions(&self, user_id: Uuid) -> Result<Vec<AuthSession>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM auth_sessions WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(user_id))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Stores a challenge for the MFA step of a login (not audited: the login is, once it
    /// completes). `Conflict` if the hash is in use, `Invalid` if the user does not exist.
    pub async fn create_mfa_challenge(
        &self,
        token_hash: &str,
        user_id: Uuid,
        source_ip: &str,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<()> {
        require_hash(token_hash, "challenge hash")?;
        sqlx::query(
            "INSERT INTO mfa_challenges (token_hash, user_id, source_ip, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(uuid_text(user_id))
        .bind(source_ip)
        .bind(expires_at)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(|e| map_constraint(e, "challenge already exists", "user does not exist"))?;
        Ok(())
    }

    /// Counts one code attempt against a challenge and reports its state. The count is one
    /// conditional UPDATE, committed at once (a failed attempt must count), so concurrent
    /// attempts can never exceed `max_attempts` in total; an attempt that would is refused as
    /// `TooManyAttempts` and not counted.
    pub async fn mfa_challenge_attempt(
        &self,
        token_hash: &str,
        max_attempts: i64,
        now_ms: i64,
    ) -> Result<ChallengeCheck> {
        let counted = sqlx::query(
            "UPDATE mfa_challenges SET attempts = attempts + 1 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3 \
             RETURNING user_id, attempts",
        )
        .bind(token_hash)
        .bind(now_ms)
        .bind(max_attempts)
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = counted {
            return Ok(ChallengeCheck::Open {
                user_id: get_uuid(&row, "user_id")?,
                attempts: get_i64(&row, "attempts")?,
            });
        }
        let row = sqlx::query(
            "SELECT used_at, expires_at, attempts FROM mfa_challenges WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(ChallengeCheck::Unknown);
        };
        Ok(if get_opt_i64(&row, "used_at")?.is_some() {
            ChallengeCheck::Used
        } else if get_i64(&row, "expires_at")? <= now_ms {
            ChallengeCheck::Expired
        } else {
            ChallengeCheck::TooManyAttempts
        })
    }
}

impl Tx {
    /// [`Store::auth_session`] inside this transaction.
    pub async fn auth_session(&mut self, id: Uuid) -> Result<Option<AuthSession>> {
        fetch_session(&mut *self.conn(), id).await
    }

    /// Creates a session and its first refresh token. `Conflict` if a hash is already in use,
    /// `Invalid` if the user or organisation does not exist.
    pub async fn create_auth_session(
        &mut self,
        new: &NewAuthSession,
        now_ms: i64,
    ) -> Result<AuthSession> {
        require_hash(&new.access_hash, "access hash")?;
        require_hash(&new.refresh_hash, "refresh hash")?;
        let user_agent = new
            .user_agent
            .as_deref()
            .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect::<String>());
        let id = Uuid::new_v4();
        let conflict = |e| {
            map_constraint(
                e,
                "session token already exists",
                "user or organisation does not exist",
            )
        };
        let sql = format!(
            "INSERT INTO auth_sessions (id, user_id, org_id, access_hash, access_expires_at, \
             refresh_expires_at, source_ip, user_agent, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {SESSION_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(new.user_id))
            .bind(uuid_text(new.org_id))
            .bind(&new.access_hash)
            .bind(new.access_expires_at)
            .bind(new.refresh_expires_at)
            .bind(new.source_ip.clone())
            .bind(user_agent)
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(conflict)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&new.refresh_hash)
        .bind(uuid_text(id))
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await
        .map_err(conflict)?;
        session_from_row(&row)
    }

    /// Exchanges refresh token `old_hash` for a new access and refresh token. A token that was
    /// used before revokes its session (reason `refresh_token_reuse`) in this transaction: the
    /// caller commits that revocation with its audit record. For `Unknown`, `Expired` and
    /// `Revoked` nothing was written. Of two concurrent calls with the same token exactly one
    /// rotates: the conditional UPDATE that marks the token used waits on the other's row lock
    /// (PostgreSQL) or write lock (SQLite), then finds it used, and the loser is treated as a
    /// reuse.
    pub async fn rotate_refresh_token(
        &mut self,
        old_hash: &str,
        new_access_hash: &str,
        new_access_expires_at: i64,
        new_refresh_hash: &str,
        new_refresh_expires_at: i64,
        now_ms: i64,
    ) -> Result<RefreshOutcome> {
        require_hash(new_access_hash, "access hash")?;
        require_hash(new_refresh_hash, "refresh hash")?;
        let conn = self.conn();
        let row = sqlx::query(
            "SELECT r.used_at AS used_at, s.id AS id, s.user_id AS user_id, \
             s.refresh_expires_at AS refresh_expires_at, s.revoked_at AS revoked_at \
             FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id \
             WHERE r.token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Unknown);
        };
        let session_id = get_uuid(&row, "id")?;
        let user_id = get_uuid(&row, "user_id")?;
        if get_opt_i64(&row, "revoked_at")?.is_some() {
            return Ok(RefreshOutcome::Revoked);
        }
        if get_opt_i64(&row, "used_at")?.is_some() {
            return reused(conn, session_id, user_id, now_ms).await;
        }
        if get_i64(&row, "refresh_expires_at")? <= now_ms {
            return Ok(RefreshOutcome::Expired);
        }
        let marked = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL",
        )
        .bind(old_hash)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        if marked.rows_affected() == 0 {
            // A concurrent refresh with the same token got there first.
            return reused(conn, session_id, user_id, now_ms).await;
        }
        let conflict = |e| map_constraint(e, "session token already exists", "session is gone");
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(new_refresh_hash)
        .bind(uuid_text(session_id))
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(conflict)?;
        let sql = format!(
            "UPDATE auth_sessions SET access_hash = $2, access_expires_at = $3, \
             refresh_expires_at = $4, last_used_at = $5 \
             WHERE id = $1 AND revoked_at IS NULL RETURNING {SESSION_COLS}"
        );
        let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(session_id))
            .bind(new_access_hash)
            .bind(new_access_expires_at)
            .bind(new_refresh_expires_at)
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await
            .map_err(conflict)?;
        let Some(updated) = updated else {
            // Revoked (say, by a logout) since our read; the caller drops the transaction,
            // which undoes the token's use.
            return Ok(RefreshOutcome::Revoked);
        };
        Ok(RefreshOutcome::Rotated(session_from_row(&updated)?))
    }

    /// Records a step-up (a second factor proved again) on a live session; false if the session
    /// is revoked or does not exist.
    pub async fn record_step_up(&mut self, id: Uuid, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE auth_sessions SET step_up_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(uuid_text(id))
        .bind(now_ms)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes a session; false if it was already revoked or does not exist.
    pub async fn revoke_auth_session(
        &mut self,
        id: Uuid,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool> {
        revoke_in(self.conn(), id, reason, now_ms).await
    }

    /// Revokes every live session of a user; returns how many.
    pub async fn revoke_user_sessions(
        &mut self,
        user_id: Uuid,
        reason: &str,
        now_ms: i64,
    ) -> Result<u64> {
        self.revoke_user_sessions_except(user_id, None, reason, now_ms)
            .await
    }

    /// Revokes every live session of a user but `keep` (the one asking); returns how many.
    pub async fn revoke_user_sessions_except(
        &mut self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
        now_ms: i64,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE auth_sessions SET revoked_at = $2, revoked_reason = $3 \
             WHERE user_id = $1 AND revoked_at IS NULL AND id <> $4",
        )
        .bind(uuid_text(user_id))
        .bind(now_ms)
        .bind(reason)
        // No session has an empty id.
        .bind(keep.map(uuid_text).unwrap_or_default())
        .execute(&mut *self.conn())
        .await?;
        Ok(done.rows_affected())
    }

    /// Marks a challenge used, in the transaction that opens the session it leads to; true only
    /// for the call that did so.
    pub async fn consume_mfa_challenge(&mut self, token_hash: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE mfa_challenges SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL",
        )
        .bind(token_hash)
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_hashes_are_refused() {
        assert!(require_hash("", "x").is_err());
        assert!(require_hash("ab", "x").is_ok());
    }
}
