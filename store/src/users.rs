//! Operator accounts. Emails are stored lower-cased so uniqueness and look-ups ignore case.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::Store;
use crate::db::{get_i64, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub org_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub status: String,
    pub created_at: i64,
}

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
    })
}

impl Store {
    /// Creates a user; `Conflict` if the email (in any letter case) is taken, `Invalid` if the
    /// organisation does not exist.
    pub async fn create_user(&self, new: &NewUser, now_ms: i64) -> Result<User> {
        let email = normalise_email(&new.email);
        if email.is_empty() {
            return Err(StoreError::Invalid("email is empty".into()));
        }
        if new.role.trim().is_empty() {
            return Err(StoreError::Invalid("role is empty".into()));
        }
        let row = sqlx::query(
            "INSERT INTO users (id, org_id, email, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             RETURNING id, org_id, email, password_hash, role, status, created_at",
        )
        .bind(uuid_text(Uuid::new_v4()))
        .bind(uuid_text(new.org_id))
        .bind(email)
        .bind(&new.password_hash)
        .bind(&new.role)
        .bind(now_ms)
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            map_constraint(e, "email already registered", "organisation does not exist")
        })?;
        user_from_row(&row)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT id, org_id, email, password_hash, role, status, created_at \
             FROM users WHERE email = $1",
        )
        .bind(normalise_email(email))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }
}
