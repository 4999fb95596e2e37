//! Notification routing's tables (schema 0006): policies, silences and maintenance windows
//! (their specs are JSON the domain validates and the store keeps opaque), the persisted alert
//! groups, and the log of notifications routing enqueued.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// Which configuration table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoutingKind {
    Policy,
    Silence,
    Maintenance,
}

impl RoutingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingKind::Policy => "policy",
            RoutingKind::Silence => "silence",
            RoutingKind::Maintenance => "maintenance window",
        }
    }

    fn table(self) -> &'static str {
        match self {
            RoutingKind::Policy => "routing_policies",
            RoutingKind::Silence => "routing_silences",
            RoutingKind::Maintenance => "routing_maintenance",
        }
    }

    /// Policies and windows are named (unique per org); silences have a time span instead.
    fn named(self) -> bool {
        self != RoutingKind::Silence
    }
}

/// A stored policy, silence or maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The spec as JSON.
    pub spec: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What is written: the spec and what the table indexes of it (a name for policies and
/// windows, the span for silences).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingWrite {
    pub spec: String,
    pub name: Option<String>,
    pub span: Option<(i64, i64)>,
}

/// A persisted alert group: its state as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingGroupRow {
    pub policy_id: Uuid,
    pub group_key: String,
    pub org_id: Uuid,
    pub state: String,
    pub updated_at: i64,
}

/// One notification routing enqueued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingSent {
    pub notification_id: Uuid,
    pub org_id: Uuid,
    pub policy_id: Uuid,
    pub group_key: String,
    pub integration_id: Uuid,
    pub kind: String,
    pub total: i64,
    pub title: String,
    pub created_at: i64,
}

const COLS: &str = "id, org_id, spec, created_by, created_at, updated_at";

fn record_from_row(row: &AnyRow) -> Result<RoutingRecord> {
    Ok(RoutingRecord {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        spec: get_str(row, "spec")?,
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_i64(row, "updated_at")?,
    })
}

fn check_write(kind: RoutingKind, write: &RoutingWrite) -> Result<(String, i64, i64)> {
    match (kind.named(), &write.name, write.span) {
        (true, Some(name), _) => Ok((name.clone(), 0, 0)),
        (false, _, Some((s, e))) => Ok((String::new(), s, e)),
        (true, None, _) => Err(StoreError::Invalid(format!(
            "a {} needs a name",
            kind.as_str()
        ))),
        (false, _, None) => Err(StoreError::Invalid("a silence needs its span".into())),
    }
}

impl Tx {
    /// Stores a new policy, silence or window of `org_id`; `Conflict` on a duplicate name.
    pub async fn create_routing(
        &mut self,
        kind: RoutingKind,
        org_id: Uuid,
        write: &RoutingWrite,
        created_by: &str,
        now_ms: i64,
    ) -> Result<RoutingRecord> {
        let (name, starts, ends) = check_write(kind, write)?;
        let table = kind.table();
        let query = if kind.named() {
            let sql = format!(
                "INSERT INTO {table} (id, org_id, name, spec, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {COLS}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(uuid_text(Uuid::new_v4()))
                .bind(uuid_text(org_id))
                .bind(name)
        } else {
            let sql = format!(
                "INSERT INTO {table} (id, org_id, starts_at, ends_at, spec, created_by, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {COLS}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(uuid_text(Uuid::new_v4()))
                .bind(uuid_text(org_id))
                .bind(starts)
                .bind(ends)
        };
        let query = query
            .bind(write.spec.clone())
            .bind(created_by.to_owned())
            .bind(now_ms);
        let row = query.fetch_one(&mut *self.conn()).await.map_err(|e| {
            map_constraint(
                e,
                &format!("a {} with this name exists", kind.as_str()),
                "organisation does not exist",
            )
        })?;
        record_from_row(&row)
    }

    /// Replaces the spec of one of `org_id`'s records; `NotFound` if it is not theirs.
    pub async fn update_routing(
        &mut self,
        kind: RoutingKind,
        org_id: Uuid,
        id: Uuid,
        write: &RoutingWrite,
        now_ms: i64,
    ) -> Result<RoutingRecord> {
        let (name, starts, ends) = check_write(kind, write)?;
        let table = kind.table();
        let query = if kind.named() {
            let sql = format!(
                "UPDATE {table} SET spec = $1, updated_at = $2, name = $3 \
                 WHERE id = $4 AND org_id = $5 RETURNING {COLS}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(write.spec.clone())
                .bind(now_ms)
                .bind(name)
        } else {
            let sql = format!(
                "UPDATE {table} SET spec = $1, updated_at = $2, starts_at = $3, ends_at = $4 \
                 WHERE id = $5 AND org_id = $6 RETURNING {COLS}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(write.spec.clone())
                .bind(now_ms)
                .bind(starts)
                .bind(ends)
        };
        let row = query
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(&mut *self.conn())
            .await
            .map_err(|e| {
                map_constraint(
                    e,
                    &format!("a {} with this name exists", kind.as_str()),
                    "organisation does not exist",
                )
            })?
            .ok_or(StoreError::NotFound)?;
        record_from_row(&row)
    }

    /// Deletes one of `org_id`'s records; `NotFound` if it is not theirs.
    pub async fn delete_routing(
        &mut self,
        kind: RoutingKind,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE id = $1 AND org_id = $2", kind.table());
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Writes a group's state (insert or replace).
    pub async fn save_routing_group(&mut self, row: &RoutingGroupRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO routing_groups (policy_id, group_key, org_id, state, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (policy_id, group_key) DO UPDATE SET state = $4, updated_at = $5",
        )
        .bind(uuid_text(row.policy_id))
        .bind(row.group_key.clone())
        .bind(uuid_text(row.org_id))
        .bind(row.state.clone())
        .bind(row.updated_at)
        .execute(&mut *self.conn())
        .await?;
        Ok(())
    }

    /// Forgets a group (it emptied, or its policy went); deleting one already gone is fine.
    pub async fn delete_routing_group(&mut self, policy_id: Uuid, group_key: &str) -> Result<()> {
        sqlx::query("DELETE FROM routing_groups WHERE policy_id = $1 AND group_key = $2")
            .bind(uuid_text(policy_id))
            .bind(group_key.to_owned())
            .execute(&mut *self.conn())
            .await?;
        Ok(())
    }

    /// Logs one notification routing enqueued.
    pub async fn record_routing_sent(&mut self, sent: &RoutingSent) -> Result<()> {
        sqlx::query(
            "INSERT INTO routing_sent (notification_id, org_id, policy_id, group_key, \
             integration_id, kind, total, title, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(uuid_text(sent.notification_id))
        .bind(uuid_text(sent.org_id))
        .bind(uuid_text(sent.policy_id))
        .bind(sent.group_key.clone())
        .bind(uuid_text(sent.integration_id))
        .bind(sent.kind.clone())
        .bind(sent.total)
        .bind(sent.title.clone())
        .bind(sent.created_at)
        .execute(&mut *self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// `org_id`'s records of one kind, oldest first.
    pub async fn list_routing(
        &self,
        kind: RoutingKind,
        org_id: Uuid,
    ) -> Result<Vec<RoutingRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM {} WHERE org_id = $1 ORDER BY created_at, id",
            kind.table()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// One of `org_id`'s records.
    pub async fn routing(
        &self,
        kind: RoutingKind,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<Option<RoutingRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM {} WHERE id = $1 AND org_id = $2",
            kind.table()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Every org's records of one kind, for the routing driver (silences: only those that have
    /// not ended by `now_ms`).
    pub async fn all_routing(&self, kind: RoutingKind, now_ms: i64) -> Result<Vec<RoutingRecord>> {
        let filter = if kind.named() {
            ""
        } else {
            " WHERE ends_at > $1"
        };
        let sql = format!(
            "SELECT {COLS} FROM {}{filter} ORDER BY created_at, id",
            kind.table()
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if !kind.named() {
            query = query.bind(now_ms);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Every persisted group.
    pub async fn routing_groups(&self) -> Result<Vec<RoutingGroupRow>> {
        let rows = sqlx::query(
            "SELECT policy_id, group_key, org_id, state, updated_at FROM routing_groups \
             ORDER BY policy_id, group_key",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RoutingGroupRow {
                    policy_id: get_uuid(row, "policy_id")?,
                    group_key: get_str(row, "group_key")?,
                    org_id: get_uuid(row, "org_id")?,
                    state: get_str(row, "state")?,
                    updated_at: get_i64(row, "updated_at")?,
                })
            })
            .collect()
    }

    /// What routing enqueued for `org_id`, oldest first.
    pub async fn routing_sent(&self, org_id: Uuid) -> Result<Vec<RoutingSent>> {
        let rows = sqlx::query(
            "SELECT notification_id, org_id, policy_id, group_key, integration_id, kind, total, \
             title, created_at FROM routing_sent WHERE org_id = $1 \
             ORDER BY created_at, notification_id",
        )
        .bind(uuid_text(org_id))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RoutingSent {
                    notification_id: get_uuid(row, "notification_id")?,
                    org_id: get_uuid(row, "org_id")?,
                    policy_id: get_uuid(row, "policy_id")?,
                    group_key: get_str(row, "group_key")?,
                    integration_id: get_uuid(row, "integration_id")?,
                    kind: get_str(row, "kind")?,
                    total: get_i64(row, "total")?,
                    title: get_str(row, "title")?,
                    created_at: get_i64(row, "created_at")?,
                })
            })
            .collect()
    }
}
