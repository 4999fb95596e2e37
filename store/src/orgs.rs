//! Organisations: the tenants every other row belongs to.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::Store;
use crate::db::{get_i64, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};

/// Name of the organisation single-tenant installs put everything in.
pub const DEFAULT_ORG_NAME: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub created_at: i64,
}

fn org_from_row(row: &AnyRow) -> Result<Org> {
    Ok(Org {
        id: get_uuid(row, "id")?,
        name: get_str(row, "name")?,
        created_at: get_i64(row, "created_at")?,
    })
}

impl Store {
    /// Creates an organisation; `Conflict` if the name is taken.
    pub async fn create_org(&self, name: &str, now_ms: i64) -> Result<Org> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("organisation name is empty".into()));
        }
        let org = Org {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            created_at: now_ms,
        };
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(uuid_text(org.id))
            .bind(&org.name)
            .bind(org.created_at)
            .execute(self.pool())
            .await
            .map_err(|e| {
                map_constraint(e, "organisation name already exists", "bad organisation")
            })?;
        Ok(org)
    }

    /// The organisation named "default", created on first use. Safe to race: the insert is a
    /// no-op when another caller got there first, and both then read the same row.
    pub async fn default_org(&self, now_ms: i64) -> Result<Org> {
        sqlx::query(
            "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(uuid_text(Uuid::new_v4()))
        .bind(DEFAULT_ORG_NAME)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        let row = sqlx::query("SELECT id, name, created_at FROM orgs WHERE name = $1")
            .bind(DEFAULT_ORG_NAME)
            .fetch_one(self.pool())
            .await?;
        org_from_row(&row)
    }

    /// Looks an organisation up by id (if the text is a uuid) or by exact name.
    pub async fn find_org(&self, name_or_id: &str) -> Result<Option<Org>> {
        let key = name_or_id.trim();
        // Normalise a uuid to the stored hyphenated lower-case form; a name that merely looks
        // like a uuid is still found through the name comparison.
        let id = Uuid::parse_str(key)
            .map(uuid_text)
            .unwrap_or_else(|_| key.to_owned());
        let row = sqlx::query(
            "SELECT id, name, created_at FROM orgs WHERE id = $1 OR name = $2 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(id)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(org_from_row).transpose()
    }
}
