//! Operator accounts. Emails are stored lower-cased so uniqueness and look-ups ignore case.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{
    bool_int, get_bool, get_i64, get_opt_i64, get_opt_str, get_str, get_uuid, uuid_text,
};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub org_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    /// Shown instead of the email where there is one.
    pub display_name: Option<String>,
}

/// A stored account. `Debug` hides the password hash and the TOTP secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub status: String,
    pub created_at: i64,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Base32 TOTP secret: pending while `mfa_enabled` is false, in force once it is true.
    #[serde(default)]
    pub mfa_secret: Option<String>,
    #[serde(default)]
    pub mfa_enabled: bool,
    /// The last TOTP time step accepted (see [`Tx::accept_totp_step`]).
    #[serde(default)]
    pub mfa_last_step: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const REDACTED: &str = "<redacted>";
        f.debug_struct("User")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("email", &self.email)
            .field("password_hash", &REDACTED)
            .field("role", &self.role)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("display_name", &self.display_name)
            .field("mfa_secret", &self.mfa_secret.as_ref().map(|_| REDACTED))
            .field("mfa_enabled", &self.mfa_enabled)
            .field("mfa_last_step", &self.mfa_last_step)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Changes to a user; `None` leaves a field as it is (for `display_name`, `Some(None)` clears
/// it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub display_name: Option<Option<String>>,
    pub role: Option<String>,
    pub status: Option<String>,
}

const USER_COLS: &str = "id, org_id, email, password_hash, role, status, created_at, \
                         display_name, mfa_secret, mfa_enabled, mfa_last_step, updated_at";

fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        email: get_str(row, "email")?,
        password_hash: get_str(row, "password_hash")?,
        role: get_str(row, "role")?,
        status: get_str(row, "status")?,
        created_at: get_i64(row, "created_at")?,
        display_name: get_opt_str(row, "display_name")?,
        mfa_secret: get_opt_str(row, "mfa_secret")?,
        mfa_enabled: get_bool(row, "mfa_enabled")?,
        mfa_last_step: get_opt_i64(row, "mfa_last_step")?,
        updated_at: get_opt_i64(row, "updated_at")?,
    })
}

/// One user by id, on the pool or inside a transaction.
async fn fetch_user_by_id<'e, E>(exec: E, id: Uuid) -> Result<Option<User>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(uuid_text(id))
        .fetch_optional(exec)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// One user of `org_id` by id, on the pool or inside a transaction.
async fn fetch_user_in_org<'e, E>(exec: E, org_id: Uuid, id: Uuid) -> Result<Option<User>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1 AND org_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .fetch_optional(exec)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

impl Store {
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(normalise_email(email))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Any organisation's user by id; for authentication, where the id comes from a verified
    /// credential. Operations acting within an organisation use [`Store::user_in_org`].
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        fetch_user_by_id(self.pool(), id).await
    }

    /// The user, if it belongs to `org_id`.
    pub async fn user_in_org(&self, org_id: Uuid, id: Uuid) -> Result<Option<User>> {
        fetch_user_in_org(self.pool(), org_id, id).await
    }

    /// The organisation's users ordered by email (byte order on both backends).
    pub async fn list_users(&self, org_id: Uuid) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE org_id = $1 ORDER BY email");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .fetch_all(self.pool())
            .await?;
        let mut users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        // PostgreSQL may sort by a locale collation; keep one order whatever the backend.
        users.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(users)
    }
}

impl Tx {
    /// [`Store::user_by_id`] inside this transaction.
    pub async fn user_by_id(&mut self, id: Uuid) -> Result<Option<User>> {
        fetch_user_by_id(&mut *self.conn(), id).await
    }

    /// [`Store::user_in_org`] inside this transaction.
    pub async fn user_in_org(&mut self, org_id: Uuid, id: Uuid) -> Result<Option<User>> {
        fetch_user_in_org(&mut *self.conn(), org_id, id).await
    }

    /// Creates a user with its display name in one write; `Conflict` if the email (in any letter
    /// case) is taken, `Invalid` if the organisation does not exist.
    pub async fn create_user(&mut self, new: &NewUser, now_ms: i64) -> Result<User> {
        let email = normalise_email(&new.email);
        if email.is_empty() {
            return Err(StoreError::Invalid("email is empty".into()));
        }
        if new.role.trim().is_empty() {
            return Err(StoreError::Invalid("role is empty".into()));
        }
        let sql = format!(
            "INSERT INTO users (id, org_id, email, password_hash, role, created_at, display_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {USER_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(Uuid::new_v4()))
            .bind(uuid_text(new.org_id))
            .bind(email)
            .bind(&new.password_hash)
            .bind(&new.role)
            .bind(now_ms)
            .bind(new.display_name.clone())
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| {
                map_constraint(e, "email already registered", "organisation does not exist")
            })?;
        user_from_row(&row)
    }

    /// Applies `update` to a user of `org_id` and stamps `updated_at`. `NotFound` if the user is
    /// not in that organisation, `Conflict` if the new email is taken, `Invalid` for an empty
    /// email, role or status.
    pub async fn update_user(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        update: &UserUpdate,
        now_ms: i64,
    ) -> Result<User> {
        let email = update.email.as_deref().map(normalise_email);
        if email.as_deref().is_some_and(str::is_empty) {
            return Err(StoreError::Invalid("email is empty".into()));
        }
        let role = update.role.as_deref().map(str::trim);
        if role.is_some_and(str::is_empty) {
            return Err(StoreError::Invalid("role is empty".into()));
        }
        let status = update.status.as_deref().map(str::trim);
        if status.is_some_and(str::is_empty) {
            return Err(StoreError::Invalid("status is empty".into()));
        }
        let sql = format!(
            "UPDATE users SET email = COALESCE($3, email), \
             display_name = CASE WHEN $4 = 1 THEN $5 ELSE display_name END, \
             role = COALESCE($6, role), status = COALESCE($7, status), updated_at = $8 \
             WHERE id = $1 AND org_id = $2 RETURNING {USER_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(email)
            .bind(bool_int(update.display_name.is_some()))
            .bind(update.display_name.clone().flatten())
            .bind(role.map(str::to_owned))
            .bind(status.map(str::to_owned))
            .bind(now_ms)
            .fetch_optional(&mut *self.conn())
            .await
            .map_err(|e| map_constraint(e, "email already registered", "bad user"))?
            .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    /// Replaces the password hash; `NotFound` if there is no such user.
    pub async fn set_user_password(
        &mut self,
        id: Uuid,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<()> {
        if password_hash.is_empty() {
            return Err(StoreError::Invalid("password hash is empty".into()));
        }
        let done =
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(uuid_text(id))
                .bind(password_hash)
                .bind(now_ms)
                .execute(&mut *self.conn())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Sets the TOTP state: setup stores a secret with `enabled = false`, enabling passes the
    /// same secret with `enabled = true`, disabling passes `None, false` and also forgets the
    /// last accepted step. `Invalid` for `enabled` without a secret, `NotFound` if there is no
    /// such user.
    pub async fn set_user_mfa(
        &mut self,
        id: Uuid,
        secret: Option<&str>,
        enabled: bool,
        now_ms: i64,
    ) -> Result<()> {
        if enabled && secret.is_none() {
            return Err(StoreError::Invalid(
                "MFA cannot be enabled without a secret".into(),
            ));
        }
        if secret.is_some_and(str::is_empty) {
            return Err(StoreError::Invalid("MFA secret is empty".into()));
        }
        // The last step is kept while a secret stays (so the code that enabled MFA cannot be
        // replayed at the next login) and cleared with it.
        let done = sqlx::query(
            "UPDATE users SET mfa_secret = $2, mfa_enabled = $3, \
             mfa_last_step = CASE WHEN $4 = 1 THEN NULL ELSE mfa_last_step END, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(uuid_text(id))
        .bind(secret.map(str::to_owned))
        .bind(bool_int(enabled))
        .bind(bool_int(secret.is_none()))
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records that the TOTP code for time step `step` was used, if no code for this or a later
    /// step was accepted before. One conditional UPDATE, so of two concurrent logins with the same
    /// code exactly one gets `true` (the row lock on PostgreSQL, the write lock on SQLite). `false`
    /// also for an unknown user.
    pub async fn accept_totp_step(&mut self, user_id: Uuid, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET mfa_last_step = $2 \
             WHERE id = $1 AND (mfa_last_step IS NULL OR mfa_last_step < $2)",
        )
        .bind(uuid_text(user_id))
        .bind(step)
        .execute(&mut *self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let user = User {
            id: Uuid::nil(),
            org_id: Uuid::nil(),
            email: "a@example.com".into(),
            password_hash: "$argon2id$secret-hash".into(),
            role: "admin".into(),
            status: "active".into(),
            created_at: 1,
            display_name: Some("Alice".into()),
            mfa_secret: Some("JBSWY3DPEHPK3PXP".into()),
            mfa_enabled: true,
            mfa_last_step: Some(7),
            updated_at: None,
        };
        let text = format!("{user:?}");
        assert!(!text.contains("secret-hash"), "{text}");
        assert!(!text.contains("JBSWY3DPEHPK3PXP"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(text.contains("a@example.com"), "{text}");
        let none = User {
            mfa_secret: None,
            ..user
        };
        assert!(format!("{none:?}").contains("mfa_secret: None"));
    }
}
