//! Organisations: the tenants every other row belongs to, the MSSP link from a customer
//! organisation to its provider, and provider users' roles in customer organisations.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_opt_uuid, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// Name of the organisation single-tenant installs put everything in.
pub const DEFAULT_ORG_NAME: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub created_at: i64,
    /// The provider organisation that manages this (customer) organisation, if any.
    #[serde(default)]
    pub parent_org_id: Option<Uuid>,
}

/// A user's role in an organisation other than their own (MSSP staff in a customer org).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgAssignment {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub role: String,
    pub created_at: i64,
}

const ORG_COLS: &str = "id, name, created_at, parent_org_id";
const ASSIGNMENT_COLS: &str = "user_id, org_id, role, created_at";

fn org_from_row(row: &AnyRow) -> Result<Org> {
    Ok(Org {
        id: get_uuid(row, "id")?,
        name: get_str(row, "name")?,
        created_at: get_i64(row, "created_at")?,
        parent_org_id: get_opt_uuid(row, "parent_org_id")?,
    })
}

fn assignment_from_row(row: &AnyRow) -> Result<OrgAssignment> {
    Ok(OrgAssignment {
        user_id: get_uuid(row, "user_id")?,
        org_id: get_uuid(row, "org_id")?,
        role: get_str(row, "role")?,
        created_at: get_i64(row, "created_at")?,
    })
}

impl Tx {
    /// Creates an organisation, as a customer of `parent_org_id` when given. `Conflict` if the
    /// name is taken, `Invalid` if the name is empty or the parent does not exist.
    pub async fn create_org(
        &mut self,
        name: &str,
        parent_org_id: Option<Uuid>,
        now_ms: i64,
    ) -> Result<Org> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("organisation name is empty".into()));
        }
        let org = Org {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            created_at: now_ms,
            parent_org_id,
        };
        sqlx::query(
            "INSERT INTO orgs (id, name, created_at, parent_org_id) VALUES ($1, $2, $3, $4)",
        )
        .bind(uuid_text(org.id))
        .bind(&org.name)
        .bind(org.created_at)
        .bind(org.parent_org_id.map(uuid_text))
        .execute(&mut *self.conn())
        .await
        .map_err(|e| {
            map_constraint(
                e,
                "organisation name already exists",
                "parent organisation does not exist",
            )
        })?;
        Ok(org)
    }

    /// Gives `user_id` `role` in `org_id`, replacing the role of an existing assignment (which
    /// keeps its `created_at`). `Invalid` if the role is empty or the user or organisation does
    /// not exist.
    pub async fn assign_user_to_org(
        &mut self,
        user_id: Uuid,
        org_id: Uuid,
        role: &str,
        now_ms: i64,
    ) -> Result<OrgAssignment> {
        let role = role.trim();
        if role.is_empty() {
            return Err(StoreError::Invalid("role is empty".into()));
        }
        let sql = format!(
            "INSERT INTO user_org_roles (user_id, org_id, role, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, org_id) DO UPDATE SET role = excluded.role \
             RETURNING {ASSIGNMENT_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(user_id))
            .bind(uuid_text(org_id))
            .bind(role)
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| {
                map_constraint(
                    e,
                    "assignment already exists",
                    "user or organisation does not exist",
                )
            })?;
        assignment_from_row(&row)
    }

    /// Removes an assignment; `NotFound` if there is none.
    pub async fn unassign_user_from_org(&mut self, user_id: Uuid, org_id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM user_org_roles WHERE user_id = $1 AND org_id = $2")
            .bind(uuid_text(user_id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

impl Store {
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
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
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
        let sql = format!(
            "SELECT {ORG_COLS} FROM orgs WHERE id = $1 OR name = $2 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(org_from_row).transpose()
    }

    pub async fn org(&self, id: Uuid) -> Result<Option<Org>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(org_from_row).transpose()
    }

    /// Every organisation, ordered by name (byte order on both backends).
    pub async fn list_orgs(&self) -> Result<Vec<Org>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        let mut orgs = rows.iter().map(org_from_row).collect::<Result<Vec<_>>>()?;
        orgs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(orgs)
    }

    /// The role assigned to `user_id` in `org_id`, if any. (A user's role in their own
    /// organisation is `User::role`, not an assignment.)
    pub async fn user_org_role(&self, user_id: Uuid, org_id: Uuid) -> Result<Option<String>> {
        let row = sqlx::query("SELECT role FROM user_org_roles WHERE user_id = $1 AND org_id = $2")
            .bind(uuid_text(user_id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(|r| get_str(r, "role")).transpose()
    }

    /// A user's assignments, oldest first.
    pub async fn list_user_assignments(&self, user_id: Uuid) -> Result<Vec<OrgAssignment>> {
        let sql = format!(
            "SELECT {ASSIGNMENT_COLS} FROM user_org_roles WHERE user_id = $1 \
             ORDER BY created_at, org_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(user_id))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(assignment_from_row).collect()
    }

    /// The assignments into an organisation, oldest first.
    pub async fn list_org_assignments(&self, org_id: Uuid) -> Result<Vec<OrgAssignment>> {
        let sql = format!(
            "SELECT {ASSIGNMENT_COLS} FROM user_org_roles WHERE org_id = $1 \
             ORDER BY created_at, user_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(assignment_from_row).collect()
    }
}
