//! `alert_integrations`: one channel of an organisation (kind, JSON settings, JSON secrets).

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{bool_int, get_bool, get_i64, get_opt_i64, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// A stored integration. `secrets` is for the notifier only; the API never shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub kind: String,
    /// JSON settings of the channel.
    pub config: String,
    /// JSON secrets of the channel, sealed by the vault's master key.
    pub secrets: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntegration {
    /// Chosen by the domain: the sealed secrets' AAD names it.
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub kind: String,
    pub config: String,
    pub secrets: String,
    pub enabled: bool,
}

/// A whole new state for an integration's mutable columns (the domain merges a patch first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationUpdate {
    pub name: String,
    pub config: String,
    pub secrets: String,
    pub enabled: bool,
}

const COLS: &str = "id, org_id, name, kind, config, secrets, enabled, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Integration> {
    Ok(Integration {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        name: get_str(row, "name")?,
        kind: get_str(row, "kind")?,
        config: get_str(row, "config")?,
        secrets: get_str(row, "secrets")?,
        enabled: get_bool(row, "enabled")?,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_opt_i64(row, "updated_at")?,
    })
}

const DUPLICATE: &str = "an integration with this name already exists";

impl Tx {
    pub async fn create_integration(
        &mut self,
        new: &NewIntegration,
        now_ms: i64,
    ) -> Result<Integration> {
        let id = new.id;
        let sql = format!(
            "INSERT INTO alert_integrations ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) \
             RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(new.org_id))
            .bind(&new.name)
            .bind(&new.kind)
            .bind(&new.config)
            .bind(&new.secrets)
            .bind(bool_int(new.enabled))
            .bind(now_ms)
            .fetch_one(self.conn())
            .await
            .map_err(|e| map_constraint(e, DUPLICATE, "organisation not found"))?;
        from_row(&row)
    }

    pub async fn update_integration(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        update: &IntegrationUpdate,
        now_ms: i64,
    ) -> Result<Integration> {
        let sql = format!(
            "UPDATE alert_integrations SET name = $3, config = $4, secrets = $5, enabled = $6, \
             updated_at = $7 WHERE id = $1 AND org_id = $2 RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(&update.name)
            .bind(&update.config)
            .bind(&update.secrets)
            .bind(bool_int(update.enabled))
            .bind(now_ms)
            .fetch_optional(self.conn())
            .await
            .map_err(|e| map_constraint(e, DUPLICATE, "organisation not found"))?;
        row.as_ref()
            .map(from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// Deletes an integration and, with it, its delivery log.
    pub async fn delete_integration(&mut self, org_id: Uuid, id: Uuid) -> Result<()> {
        // Explicit rather than relying on ON DELETE CASCADE, which SQLite applies only with
        // foreign keys switched on.
        sqlx::query("DELETE FROM alert_notifications WHERE integration_id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(self.conn())
            .await?;
        let done = sqlx::query("DELETE FROM alert_integrations WHERE id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

impl Store {
    /// The integrations of an organisation, by name.
    pub async fn list_integrations(&self, org_id: Uuid) -> Result<Vec<Integration>> {
        let sql = format!("SELECT {COLS} FROM alert_integrations WHERE org_id = $1 ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// One integration of an organisation.
    pub async fn integration(&self, org_id: Uuid, id: Uuid) -> Result<Option<Integration>> {
        let sql = format!("SELECT {COLS} FROM alert_integrations WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }
}
