//! `vault_grants`: what a user or a role may do with one secret, beyond its owner.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{bool_int, get_bool, get_i64, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// What a grant allows. Any of reveal, use or write implies read (the domain sets it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantFlags {
    pub read: bool,
    pub reveal: bool,
    pub use_in_jobs: bool,
    pub write: bool,
}

impl GrantFlags {
    pub fn union(self, other: GrantFlags) -> GrantFlags {
        GrantFlags {
            read: self.read || other.read,
            reveal: self.reveal || other.reveal,
            use_in_jobs: self.use_in_jobs || other.use_in_jobs,
            write: self.write || other.write,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretGrant {
    pub id: Uuid,
    pub org_id: Uuid,
    pub secret_id: Uuid,
    /// `user` or `role`.
    pub subject_kind: String,
    /// A user id or a role name.
    pub subject: String,
    pub flags: GrantFlags,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecretGrant {
    pub org_id: Uuid,
    pub secret_id: Uuid,
    pub subject_kind: String,
    pub subject: String,
    pub flags: GrantFlags,
    pub created_by: String,
}

const COLS: &str = "id, org_id, secret_id, subject_kind, subject, can_read, can_reveal, can_use, \
                    can_write, created_by, created_at";

fn from_row(row: &AnyRow) -> Result<SecretGrant> {
    Ok(SecretGrant {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        secret_id: get_uuid(row, "secret_id")?,
        subject_kind: get_str(row, "subject_kind")?,
        subject: get_str(row, "subject")?,
        flags: GrantFlags {
            read: get_bool(row, "can_read")?,
            reveal: get_bool(row, "can_reveal")?,
            use_in_jobs: get_bool(row, "can_use")?,
            write: get_bool(row, "can_write")?,
        },
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
    })
}

impl Tx {
    /// Grants (or replaces the grant of) a subject on a secret.
    pub async fn put_secret_grant(
        &mut self,
        new: &NewSecretGrant,
        now_ms: i64,
    ) -> Result<SecretGrant> {
        let sql = format!(
            "INSERT INTO vault_grants ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (secret_id, subject_kind, subject) DO UPDATE SET \
             can_read = excluded.can_read, can_reveal = excluded.can_reveal, \
             can_use = excluded.can_use, can_write = excluded.can_write, \
             created_by = excluded.created_by, created_at = excluded.created_at \
             RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(Uuid::now_v7()))
            .bind(uuid_text(new.org_id))
            .bind(uuid_text(new.secret_id))
            .bind(&new.subject_kind)
            .bind(&new.subject)
            .bind(bool_int(new.flags.read))
            .bind(bool_int(new.flags.reveal))
            .bind(bool_int(new.flags.use_in_jobs))
            .bind(bool_int(new.flags.write))
            .bind(&new.created_by)
            .bind(now_ms)
            .fetch_one(self.conn())
            .await
            .map_err(|e| map_constraint(e, "grant exists", "secret not found"))?;
        from_row(&row)
    }

    /// Removes a grant; returns it (its secret, for the audit record and the access log).
    pub async fn delete_secret_grant(&mut self, org_id: Uuid, id: Uuid) -> Result<SecretGrant> {
        let sql =
            format!("DELETE FROM vault_grants WHERE id = $1 AND org_id = $2 RETURNING {COLS}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.conn())
            .await?;
        row.as_ref()
            .map(from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }
}

impl Store {
    /// One grant of the org.
    pub async fn secret_grant(&self, org_id: Uuid, id: Uuid) -> Result<Option<SecretGrant>> {
        let sql = format!("SELECT {COLS} FROM vault_grants WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The grants on one secret, oldest first.
    pub async fn secret_grants(&self, org_id: Uuid, secret_id: Uuid) -> Result<Vec<SecretGrant>> {
        let sql = format!(
            "SELECT {COLS} FROM vault_grants WHERE secret_id = $1 AND org_id = $2 \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(secret_id))
            .bind(uuid_text(org_id))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// What the grants of `secret_ids` give one user (by id) and role, per secret.
    pub async fn grants_for(
        &self,
        org_id: Uuid,
        secret_ids: &[Uuid],
        user_id: Option<Uuid>,
        role: &str,
    ) -> Result<std::collections::HashMap<Uuid, GrantFlags>> {
        let mut out = std::collections::HashMap::new();
        if secret_ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT {COLS} FROM vault_grants WHERE org_id = $1 AND \
             ((subject_kind = 'user' AND subject = $2) OR (subject_kind = 'role' AND subject = $3)) \
             AND secret_id IN ({})",
            crate::db::placeholders(4, secret_ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .bind(user_id.map(uuid_text).unwrap_or_default())
            .bind(role.to_owned());
        for id in secret_ids {
            query = query.bind(uuid_text(*id));
        }
        for row in query.fetch_all(&self.pool).await? {
            let grant = from_row(&row)?;
            let entry: &mut GrantFlags = out.entry(grant.secret_id).or_default();
            *entry = entry.union(grant.flags);
        }
        Ok(out)
    }
}
