//! `/api/alerting/rules`: alert rules, mapped to the domain's rule operations
//! (`reap3r_actors::alerts`). The body's condition is one flat object with a `kind`; the fields
//! each kind needs are checked by the operation's validation.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use reap3r_actors::DomainError;
use reap3r_actors::alerts::{
    self, Aggregation, CreateRule, DeleteRule, Operator, Rule, RuleKind, RuleScope, Severity,
    Threshold, UpdateRule,
};
use reap3r_store::Uuid;

use super::ApiTags;
use super::auth::{Done, done};
use super::jobs::JobType;
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SeverityView {
    Info,
    Warning,
    Critical,
}

impl From<SeverityView> for Severity {
    fn from(s: SeverityView) -> Self {
        match s {
            SeverityView::Info => Severity::Info,
            SeverityView::Warning => Severity::Warning,
            SeverityView::Critical => Severity::Critical,
        }
    }
}

impl From<Severity> for SeverityView {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => SeverityView::Info,
            Severity::Warning => SeverityView::Warning,
            Severity::Critical => SeverityView::Critical,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RuleKindName {
    MetricThreshold,
    AgentOffline,
    JobFailed,
    AgentPendingApproval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AggregationView {
    Avg,
    Min,
    Max,
    Last,
}

/// What a rule watches. `metric_threshold` needs `metric`, `operator`, `value`,
/// `aggregation`, `window_s` (and takes `label`, `recovery`, `for_s`, `hold_s`);
/// `agent_offline` and `agent_pending_approval` need `for_s`; `job_failed` takes `job_type`.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RuleCondition {
    pub kind: RuleKindName,
    /// A metric name from the catalog (e.g. `cpu.percent`, `disk.used_percent`).
    #[oai(validator(max_length = 64))]
    pub metric: Option<String>,
    /// Mount point or interface of a labelled metric; none: the worst series.
    #[oai(validator(max_length = 128))]
    pub label: Option<String>,
    /// One of `>`, `>=`, `<`, `<=`.
    #[oai(validator(max_length = 2))]
    pub operator: Option<String>,
    /// The alert line.
    pub value: Option<f64>,
    /// Where a firing alert clears (hysteresis); none: at `value`.
    pub recovery: Option<f64>,
    pub aggregation: Option<AggregationView>,
    /// Aggregation window, 1 to 3600 s.
    #[oai(validator(maximum(value = "3600")))]
    pub window_s: Option<u32>,
    /// How long the condition must hold before firing, up to 604800 s (offline and approval:
    /// at least 10 s).
    #[oai(validator(maximum(value = "604800")))]
    pub for_s: Option<u32>,
    /// Minimum time a fired threshold alert stays firing, up to 86400 s.
    #[oai(validator(maximum(value = "86400")))]
    pub hold_s: Option<u32>,
    pub job_type: Option<JobType>,
}

/// Which agents the rule watches: all of the organisation's when every list is empty.
#[derive(Debug, Clone, Default, Object)]
pub struct RuleScopeView {
    /// Agents with any of these tags (at most 100).
    #[oai(default, validator(max_items = 100))]
    pub tags: Vec<Uuid>,
    /// Agents in any of these folders (at most 100).
    #[oai(default, validator(max_items = 100))]
    pub folders: Vec<Uuid>,
    /// These agents (at most 100).
    #[oai(default, validator(max_items = 100))]
    pub agents: Vec<Uuid>,
}

impl From<RuleScopeView> for RuleScope {
    fn from(s: RuleScopeView) -> Self {
        RuleScope {
            tags: s.tags,
            folders: s.folders,
            agents: s.agents,
        }
    }
}

#[derive(Debug, Object)]
pub struct AlertRuleView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub severity: SeverityView,
    pub condition: RuleCondition,
    pub scope: RuleScopeView,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

fn missing(field: &str) -> DomainError {
    DomainError::invalid(format!("{field} is required for this kind"))
}

impl RuleCondition {
    fn into_kind(self) -> Result<RuleKind, DomainError> {
        Ok(match self.kind {
            RuleKindName::MetricThreshold => RuleKind::MetricThreshold(Threshold {
                metric: self.metric.ok_or_else(|| missing("metric"))?,
                label: self.label,
                operator: Operator::parse(&self.operator.ok_or_else(|| missing("operator"))?)?,
                value: self.value.ok_or_else(|| missing("value"))?,
                recovery: self.recovery,
                aggregation: match self.aggregation.ok_or_else(|| missing("aggregation"))? {
                    AggregationView::Avg => Aggregation::Avg,
                    AggregationView::Min => Aggregation::Min,
                    AggregationView::Max => Aggregation::Max,
                    AggregationView::Last => Aggregation::Last,
                },
                window_s: self.window_s.ok_or_else(|| missing("window_s"))?,
                for_s: self.for_s.unwrap_or(0),
                hold_s: self.hold_s.unwrap_or(0),
            }),
            RuleKindName::AgentOffline => RuleKind::AgentOffline {
                for_s: self.for_s.ok_or_else(|| missing("for_s"))?,
            },
            RuleKindName::AgentPendingApproval => RuleKind::AgentPendingApproval {
                for_s: self.for_s.ok_or_else(|| missing("for_s"))?,
            },
            RuleKindName::JobFailed => RuleKind::JobFailed {
                job_type: self.job_type.map(reap3r_wire::JobType::from),
            },
        })
    }

    fn from_kind(kind: &RuleKind) -> Self {
        let mut c = RuleCondition {
            kind: RuleKindName::JobFailed,
            metric: None,
            label: None,
            operator: None,
            value: None,
            recovery: None,
            aggregation: None,
            window_s: None,
            for_s: None,
            hold_s: None,
            job_type: None,
        };
        match kind {
            RuleKind::MetricThreshold(t) => {
                c.kind = RuleKindName::MetricThreshold;
                c.metric = Some(t.metric.clone());
                c.label = t.label.clone();
                c.operator = Some(t.operator.as_str().to_owned());
                c.value = Some(t.value);
                c.recovery = t.recovery;
                c.aggregation = Some(match t.aggregation {
                    Aggregation::Avg => AggregationView::Avg,
                    Aggregation::Min => AggregationView::Min,
                    Aggregation::Max => AggregationView::Max,
                    Aggregation::Last => AggregationView::Last,
                });
                c.window_s = Some(t.window_s);
                c.for_s = Some(t.for_s);
                c.hold_s = Some(t.hold_s);
            }
            RuleKind::AgentOffline { for_s } => {
                c.kind = RuleKindName::AgentOffline;
                c.for_s = Some(*for_s);
            }
            RuleKind::AgentPendingApproval { for_s } => {
                c.kind = RuleKindName::AgentPendingApproval;
                c.for_s = Some(*for_s);
            }
            RuleKind::JobFailed { job_type } => c.job_type = job_type.map(JobType::from),
        }
        c
    }
}

impl From<Rule> for AlertRuleView {
    fn from(r: Rule) -> Self {
        Self {
            id: r.id,
            org_id: r.org_id,
            name: r.name,
            enabled: r.enabled,
            severity: r.severity.into(),
            condition: RuleCondition::from_kind(&r.kind),
            scope: RuleScopeView {
                tags: r.scope.tags,
                folders: r.scope.folders,
                agents: r.scope.agents,
            },
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct CreateAlertRuleRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    /// Default true.
    pub enabled: Option<bool>,
    pub severity: SeverityView,
    pub condition: RuleCondition,
    pub scope: Option<RuleScopeView>,
}

#[derive(Debug, Object)]
pub struct UpdateAlertRuleRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub severity: Option<SeverityView>,
    pub condition: Option<RuleCondition>,
    pub scope: Option<RuleScopeView>,
}

pub struct AlertRulesApi;

#[OpenApi(tag = "ApiTags::Alerting")]
impl AlertRulesApi {
    /// List the organisation's alert rules, by name.
    #[oai(
        path = "/api/alerting/rules",
        method = "get",
        operation_id = "listAlertRules"
    )]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
    ) -> ApiResult<Json<Vec<AlertRuleView>>> {
        let rules = alerts::list_rules(&ctx.domain, auth.caller()).await?;
        Ok(Json(rules.into_iter().map(AlertRuleView::from).collect()))
    }

    /// Create an alert rule; an enabled rule starts evaluating at once.
    #[oai(
        path = "/api/alerting/rules",
        method = "post",
        operation_id = "createAlertRule"
    )]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<CreateAlertRuleRequest>,
    ) -> ApiResult<Json<AlertRuleView>> {
        let body = body.0;
        let rule = CreateRule {
            name: body.name,
            enabled: body.enabled.unwrap_or(true),
            severity: body.severity.into(),
            kind: body.condition.into_kind()?,
            scope: body.scope.unwrap_or_default().into(),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(rule.into()))
    }

    /// Get an alert rule.
    #[oai(
        path = "/api/alerting/rules/:id",
        method = "get",
        operation_id = "getAlertRule"
    )]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<AlertRuleView>> {
        let rule = alerts::get_rule(&ctx.domain, auth.caller(), id.0).await?;
        Ok(Json(rule.into()))
    }

    /// Change an alert rule. A new condition or scope, or disabling it, resolves its open
    /// alerts and starts it over.
    #[oai(
        path = "/api/alerting/rules/:id",
        method = "patch",
        operation_id = "updateAlertRule"
    )]
    async fn update(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<UpdateAlertRuleRequest>,
    ) -> ApiResult<Json<AlertRuleView>> {
        let body = body.0;
        let rule = UpdateRule {
            id: id.0,
            name: body.name,
            enabled: body.enabled,
            severity: body.severity.map(Severity::from),
            kind: body.condition.map(RuleCondition::into_kind).transpose()?,
            scope: body.scope.map(RuleScope::from),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(rule.into()))
    }

    /// Delete an alert rule; its open alerts are resolved, its past events are kept.
    #[oai(
        path = "/api/alerting/rules/:id",
        method = "delete",
        operation_id = "deleteAlertRule"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        DeleteRule { id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }
}
