//! Creating, reading, changing and deleting alert rules. Each change commits with its audit
//! record (`alert_rule.create|update|delete`, target `alert_rule:<id>`); the alert supervisor
//! learns of it from that audit event (and from its periodic reload, for changes made by
//! another process) and starts, reconfigures or stops the rule's actor.

use reap3r_store::{AlertRule, AlertRuleUpdate, NewAlertRule, Uuid};
use serde_json::json;

use super::Severity;
use super::rule::{MAX_RULE_NAME_CHARS, RuleKind, RuleScope};
use crate::access::Caller;
use crate::error::{DomainError, DomainResult, required_text};
use crate::{Domain, audit};

/// Audit action prefix the supervisor watches.
pub const RULE_AUDIT_PREFIX: &str = "alert_rule.";

/// A rule as the domain sees it: kind and scope parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub severity: Severity,
    pub kind: RuleKind,
    pub scope: RuleScope,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl Rule {
    /// Parses a stored row; a row this build cannot read is `Invalid` (logged and skipped by
    /// the supervisor, shown as an error by the API).
    pub fn from_row(row: AlertRule) -> DomainResult<Rule> {
        let kind: RuleKind = serde_json::from_value(row.spec)
            .map_err(|e| DomainError::invalid(format!("stored rule kind is unreadable: {e}")))?;
        let scope: RuleScope = serde_json::from_value(row.scope)
            .map_err(|e| DomainError::invalid(format!("stored rule scope is unreadable: {e}")))?;
        let severity = row
            .severity
            .parse::<Severity>()
            .map_err(DomainError::invalid)?;
        Ok(Rule {
            id: row.id,
            org_id: row.org_id,
            name: row.name,
            enabled: row.enabled,
            severity,
            kind,
            scope,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn rule_target(id: Uuid) -> Option<String> {
    Some(format!("alert_rule:{id}"))
}

fn spec_json(kind: &RuleKind) -> DomainResult<serde_json::Value> {
    serde_json::to_value(kind).map_err(|e| DomainError::invalid(format!("rule kind: {e}")))
}

fn scope_json(scope: &RuleScope) -> DomainResult<serde_json::Value> {
    serde_json::to_value(scope).map_err(|e| DomainError::invalid(format!("rule scope: {e}")))
}

/// The caller's organisation's rules, by name.
pub async fn list_rules(domain: &Domain, caller: &Caller) -> DomainResult<Vec<Rule>> {
    domain
        .store
        .list_alert_rules(caller.org_id)
        .await?
        .into_iter()
        .map(Rule::from_row)
        .collect()
}

/// One rule of the caller's organisation.
pub async fn get_rule(domain: &Domain, caller: &Caller, id: Uuid) -> DomainResult<Rule> {
    let row = domain
        .store
        .alert_rule(caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound("alert rule"))?;
    Rule::from_row(row)
}

#[derive(Debug, Clone)]
pub struct CreateRule {
    pub name: String,
    pub enabled: bool,
    pub severity: Severity,
    pub kind: RuleKind,
    pub scope: RuleScope,
}

impl CreateRule {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Rule> {
        let name = required_text("name", &self.name, MAX_RULE_NAME_CHARS)?;
        self.kind.validate()?;
        self.scope.validate()?;
        let new = NewAlertRule {
            name,
            enabled: self.enabled,
            severity: self.severity.as_str().to_owned(),
            kind: self.kind.as_str().to_owned(),
            spec: spec_json(&self.kind)?,
            scope: scope_json(&self.scope)?,
            created_by: caller.actor(),
        };
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let row = tx.create_alert_rule(caller.org_id, &new, now).await?;
        audit::record(
            &mut tx,
            caller,
            "alert_rule.create",
            rule_target(row.id),
            json!({ "name": row.name, "kind": row.kind, "severity": row.severity }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Rule::from_row(row)
    }
}

/// `None` leaves a field as it is. Changing the kind or scope, or disabling, starts the rule
/// over: its open events are resolved and its state dropped.
#[derive(Debug, Clone, Default)]
pub struct UpdateRule {
    pub id: Uuid,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub severity: Option<Severity>,
    pub kind: Option<RuleKind>,
    pub scope: Option<RuleScope>,
}

impl UpdateRule {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Rule> {
        let name = self
            .name
            .as_deref()
            .map(|n| required_text("name", n, MAX_RULE_NAME_CHARS))
            .transpose()?;
        if let Some(kind) = &self.kind {
            kind.validate()?;
        }
        if let Some(scope) = &self.scope {
            scope.validate()?;
        }
        let update = AlertRuleUpdate {
            name,
            enabled: self.enabled,
            severity: self.severity.map(|s| s.as_str().to_owned()),
            kind: self
                .kind
                .as_ref()
                .map(|k| Ok::<_, DomainError>((k.as_str().to_owned(), spec_json(k)?)))
                .transpose()?,
            scope: self.scope.as_ref().map(scope_json).transpose()?,
        };
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let row = tx
            .update_alert_rule(caller.org_id, self.id, &update, now)
            .await
            .map_err(|e| DomainError::from_store(e, "alert rule"))?;
        audit::record(
            &mut tx,
            caller,
            "alert_rule.update",
            rule_target(self.id),
            json!({ "name": row.name, "enabled": row.enabled, "kind": row.kind }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Rule::from_row(row)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DeleteRule {
    pub id: Uuid,
}

impl DeleteRule {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_alert_rule(caller.org_id, self.id, now)
            .await
            .map_err(|e| DomainError::from_store(e, "alert rule"))?;
        audit::record(
            &mut tx,
            caller,
            "alert_rule.delete",
            rule_target(self.id),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}
