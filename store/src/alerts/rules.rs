//! `alert_rules` rows and `alert_rule_state`, what a rule actor resumes from. The store keeps a
//! rule's kind and scope as JSON it does not interpret (the domain validates them).

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::events::resolve_open_events_of_rule;
use crate::db::{
    bool_int, get_bool, get_i64, get_opt_i64, get_str, get_uuid, to_json_text, uuid_text,
};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub severity: String,
    pub kind: String,
    pub spec: serde_json::Value,
    pub scope: serde_json::Value,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAlertRule {
    pub name: String,
    pub enabled: bool,
    pub severity: String,
    pub kind: String,
    pub spec: serde_json::Value,
    pub scope: serde_json::Value,
    pub created_by: String,
}

/// Changes to a rule; `None` leaves a field as it is. Kind and spec change together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertRuleUpdate {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub severity: Option<String>,
    pub kind: Option<(String, serde_json::Value)>,
    pub scope: Option<serde_json::Value>,
}

/// One persisted (rule, agent) state: the alert is pending or firing.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRuleState {
    pub agent_id: Uuid,
    /// `pending` or `firing`.
    pub phase: String,
    pub since: i64,
    pub fired_at: Option<i64>,
    pub last_value: Option<f64>,
    pub event_id: Uuid,
}

const RULE_COLS: &str =
    "id, org_id, name, enabled, severity, kind, spec, scope, created_by, created_at, updated_at";

fn json_col(row: &AnyRow, col: &str) -> Result<serde_json::Value> {
    crate::db::get_json(row, col)
}

fn rule_from_row(row: &AnyRow) -> Result<AlertRule> {
    Ok(AlertRule {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        name: get_str(row, "name")?,
        enabled: get_bool(row, "enabled")?,
        severity: get_str(row, "severity")?,
        kind: get_str(row, "kind")?,
        spec: json_col(row, "spec")?,
        scope: json_col(row, "scope")?,
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_opt_i64(row, "updated_at")?,
    })
}

const DUPLICATE: &str = "an alert rule with this name already exists";

impl Tx {
    pub async fn create_alert_rule(
        &mut self,
        org_id: Uuid,
        new: &NewAlertRule,
        now_ms: i64,
    ) -> Result<AlertRule> {
        let sql = format!(
            "INSERT INTO alert_rules ({RULE_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL) RETURNING {RULE_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(Uuid::new_v4()))
            .bind(uuid_text(org_id))
            .bind(new.name.clone())
            .bind(bool_int(new.enabled))
            .bind(new.severity.clone())
            .bind(new.kind.clone())
            .bind(to_json_text(&new.spec, "rule spec")?)
            .bind(to_json_text(&new.scope, "rule scope")?)
            .bind(new.created_by.clone())
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| map_constraint(e, DUPLICATE, "organisation does not exist"))?;
        rule_from_row(&row)
    }

    /// Applies `update`; a changed kind, scope or a disable drops the persisted states (the
    /// rule starts over) and resolves its open events at `now_ms`. `NotFound` if not `org_id`'s.
    pub async fn update_alert_rule(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        update: &AlertRuleUpdate,
        now_ms: i64,
    ) -> Result<AlertRule> {
        let (kind, spec) = match &update.kind {
            Some((k, s)) => (Some(k.clone()), Some(to_json_text(s, "rule spec")?)),
            None => (None, None),
        };
        let scope = update
            .scope
            .as_ref()
            .map(|s| to_json_text(s, "rule scope"))
            .transpose()?;
        let sql = format!(
            "UPDATE alert_rules SET name = COALESCE($3, name), \
             enabled = COALESCE($4, enabled), severity = COALESCE($5, severity), \
             kind = COALESCE($6, kind), spec = COALESCE($7, spec), scope = COALESCE($8, scope), \
             updated_at = $9 WHERE id = $1 AND org_id = $2 RETURNING {RULE_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(update.name.clone())
            .bind(update.enabled.map(bool_int))
            .bind(update.severity.clone())
            .bind(kind)
            .bind(spec)
            .bind(scope)
            .bind(now_ms)
            .fetch_optional(&mut *self.conn())
            .await
            .map_err(|e| map_constraint(e, DUPLICATE, "organisation does not exist"))?
            .ok_or(StoreError::NotFound)?;
        let rule = rule_from_row(&row)?;
        if update.kind.is_some() || update.scope.is_some() || update.enabled == Some(false) {
            self.drop_rule_states(id).await?;
            resolve_open_events_of_rule(self, id, "rule changed", now_ms).await?;
        }
        Ok(rule)
    }

    /// Deletes a rule of `org_id`; its open events are resolved (events outlive the rule).
    pub async fn delete_alert_rule(&mut self, org_id: Uuid, id: Uuid, now_ms: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM alert_rules WHERE id = $1 AND org_id = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        resolve_open_events_of_rule(self, id, "rule deleted", now_ms).await
    }

    async fn drop_rule_states(&mut self, rule_id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM alert_rule_state WHERE rule_id = $1")
            .bind(uuid_text(rule_id))
            .execute(&mut *self.conn())
            .await?;
        Ok(())
    }

    /// Writes the (rule, agent) state a rule actor resumes from; `None` deletes it (inactive).
    pub async fn put_alert_rule_state(
        &mut self,
        rule_id: Uuid,
        agent_id: Uuid,
        state: Option<&AlertRuleState>,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM alert_rule_state WHERE rule_id = $1 AND agent_id = $2")
            .bind(uuid_text(rule_id))
            .bind(uuid_text(agent_id))
            .execute(&mut *self.conn())
            .await?;
        let Some(s) = state else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO alert_rule_state \
             (rule_id, agent_id, phase, since, fired_at, last_value, event_id, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid_text(rule_id))
        .bind(uuid_text(agent_id))
        .bind(s.phase.clone())
        .bind(s.since)
        .bind(s.fired_at)
        .bind(s.last_value)
        .bind(uuid_text(s.event_id))
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await
        .map_err(|e| map_constraint(e, "duplicate rule state", "alert rule does not exist"))?;
        Ok(())
    }
}

impl Store {
    /// One rule of `org_id`.
    pub async fn alert_rule(&self, org_id: Uuid, id: Uuid) -> Result<Option<AlertRule>> {
        let sql = format!("SELECT {RULE_COLS} FROM alert_rules WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    /// The rules of `org_id`, by name.
    pub async fn list_alert_rules(&self, org_id: Uuid) -> Result<Vec<AlertRule>> {
        let sql =
            format!("SELECT {RULE_COLS} FROM alert_rules WHERE org_id = $1 ORDER BY name, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    /// Every enabled rule of every organisation: what the alert supervisor starts.
    pub async fn enabled_alert_rules(&self) -> Result<Vec<AlertRule>> {
        let sql = format!("SELECT {RULE_COLS} FROM alert_rules WHERE enabled = 1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    /// A rule by id whatever its organisation (the supervisor reloading a rule it was told of).
    pub async fn alert_rule_by_id(&self, id: Uuid) -> Result<Option<AlertRule>> {
        let sql = format!("SELECT {RULE_COLS} FROM alert_rules WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    /// The persisted per-agent states of a rule.
    pub async fn alert_rule_states(&self, rule_id: Uuid) -> Result<Vec<AlertRuleState>> {
        let rows = sqlx::query(
            "SELECT agent_id, phase, since, fired_at, last_value, event_id \
             FROM alert_rule_state WHERE rule_id = $1 ORDER BY agent_id",
        )
        .bind(uuid_text(rule_id))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AlertRuleState {
                    agent_id: get_uuid(row, "agent_id")?,
                    phase: get_str(row, "phase")?,
                    since: get_i64(row, "since")?,
                    fired_at: get_opt_i64(row, "fired_at")?,
                    last_value: row.try_get::<Option<f64>, _>("last_value")?,
                    event_id: get_uuid(row, "event_id")?,
                })
            })
            .collect()
    }
}
