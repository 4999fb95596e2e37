//! `/api/alerting/policies`: notification policies (which alerts reach which integrations, how
//! they are grouped and escalated), mapped to the routing operations.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::notify::routing::{
    self as routing, CreateRouting, DeleteRouting, EscalationStep, GroupLabel, PolicySpec, Saved,
    UpdateRouting,
};
use reap3r_store::Uuid;

use super::ApiTags;
use super::auth::{Done, done};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

#[derive(Debug, Clone, Object)]
pub struct EscalationStepBody {
    /// Minutes without an acknowledgement after the previous notification (1 to 10080).
    #[oai(validator(minimum(value = "1"), maximum(value = "10080")))]
    pub after_minutes: i64,
    /// Integrations this step notifies (1 to 16).
    #[oai(validator(min_items = 1, max_items = 16))]
    pub integrations: Vec<Uuid>,
}

#[derive(Debug, Object)]
pub struct PolicyRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    #[oai(default = "yes")]
    pub enabled: bool,
    /// Severities it routes (info, warning, critical); empty: all.
    #[oai(default, validator(max_items = 32))]
    pub severities: Vec<String>,
    /// Agent tags it routes (any of them); empty: all.
    #[oai(default, validator(max_items = 32, max_length = 200))]
    pub tags: Vec<String>,
    /// Folders it routes (any of them); empty: all.
    #[oai(default, validator(max_items = 32))]
    pub folder_ids: Vec<Uuid>,
    /// Integrations notified (1 to 16).
    #[oai(validator(min_items = 1, max_items = 16))]
    pub integrations: Vec<Uuid>,
    /// Group key labels (rule, org, agent, severity, folder); empty: rule and org.
    #[oai(default, validator(max_items = 5))]
    pub group_by: Vec<String>,
    /// Seconds a new group waits for more alerts before its first message (0 to 3600).
    #[oai(
        default = "default_wait",
        validator(minimum(value = "0"), maximum(value = "3600"))
    )]
    pub group_wait_s: i64,
    /// Seconds between two messages about a group's changes (10 to 86400).
    #[oai(
        default = "default_interval",
        validator(minimum(value = "10"), maximum(value = "86400"))
    )]
    pub group_interval_s: i64,
    /// Seconds after which a group still firing is reminded (60 to 604800).
    #[oai(
        default = "default_repeat",
        validator(minimum(value = "60"), maximum(value = "604800"))
    )]
    pub repeat_interval_s: i64,
    /// Steps taken while nothing is acknowledged (up to 8).
    #[oai(default, validator(max_items = 8))]
    pub escalation: Vec<EscalationStepBody>,
}

fn yes() -> bool {
    true
}
fn default_wait() -> i64 {
    routing::DEFAULT_GROUP_WAIT_S
}
fn default_interval() -> i64 {
    routing::DEFAULT_GROUP_INTERVAL_S
}
fn default_repeat() -> i64 {
    routing::DEFAULT_REPEAT_INTERVAL_S
}

impl PolicyRequest {
    fn spec(self) -> ApiResult<PolicySpec> {
        Ok(PolicySpec {
            name: self.name,
            enabled: self.enabled,
            severities: self
                .severities
                .iter()
                .map(|s| routing::parse_severity(s))
                .collect::<Result<_, _>>()?,
            tags: self.tags,
            folder_ids: self.folder_ids,
            integrations: self.integrations,
            group_by: self
                .group_by
                .iter()
                .map(|l| GroupLabel::parse(l))
                .collect::<Result<_, _>>()?,
            group_wait_s: self.group_wait_s,
            group_interval_s: self.group_interval_s,
            repeat_interval_s: self.repeat_interval_s,
            escalation: self
                .escalation
                .into_iter()
                .map(|s| EscalationStep {
                    after_minutes: s.after_minutes,
                    integrations: s.integrations,
                })
                .collect(),
        })
    }
}

#[derive(Debug, Object)]
pub struct PolicyView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub severities: Vec<String>,
    pub tags: Vec<String>,
    pub folder_ids: Vec<Uuid>,
    pub integrations: Vec<Uuid>,
    pub group_by: Vec<String>,
    pub group_wait_s: i64,
    pub group_interval_s: i64,
    pub repeat_interval_s: i64,
    pub escalation: Vec<EscalationStepBody>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Saved<PolicySpec>> for PolicyView {
    fn from(p: Saved<PolicySpec>) -> Self {
        let s = p.spec;
        Self {
            id: p.id,
            org_id: p.org_id,
            name: s.name,
            enabled: s.enabled,
            severities: s.severities.iter().map(|x| x.as_str().to_owned()).collect(),
            tags: s.tags,
            folder_ids: s.folder_ids,
            integrations: s.integrations,
            group_by: s.group_by.iter().map(|x| x.as_str().to_owned()).collect(),
            group_wait_s: s.group_wait_s,
            group_interval_s: s.group_interval_s,
            repeat_interval_s: s.repeat_interval_s,
            escalation: s
                .escalation
                .into_iter()
                .map(|e| EscalationStepBody {
                    after_minutes: e.after_minutes,
                    integrations: e.integrations,
                })
                .collect(),
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

pub struct AlertingPoliciesApi;

#[OpenApi(tag = "ApiTags::Alerting")]
impl AlertingPoliciesApi {
    /// List the organisation's notification policies.
    #[oai(
        path = "/api/alerting/policies",
        method = "get",
        operation_id = "listAlertPolicies"
    )]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<PolicyView>>> {
        let all = routing::list_routing::<PolicySpec>(&ctx.domain, auth.caller()).await?;
        Ok(Json(all.into_iter().map(PolicyView::from).collect()))
    }

    /// Create a notification policy.
    #[oai(
        path = "/api/alerting/policies",
        method = "post",
        operation_id = "createAlertPolicy"
    )]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<PolicyRequest>,
    ) -> ApiResult<Json<PolicyView>> {
        let saved = CreateRouting {
            spec: body.0.spec()?,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(saved.into()))
    }

    /// Get a notification policy.
    #[oai(
        path = "/api/alerting/policies/:id",
        method = "get",
        operation_id = "getAlertPolicy"
    )]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<PolicyView>> {
        let saved = routing::get_routing::<PolicySpec>(&ctx.domain, auth.caller(), id.0).await?;
        Ok(Json(saved.into()))
    }

    /// Replace a notification policy (its groups keep their alerts and timers).
    #[oai(
        path = "/api/alerting/policies/:id",
        method = "put",
        operation_id = "replaceAlertPolicy"
    )]
    async fn replace(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<PolicyRequest>,
    ) -> ApiResult<Json<PolicyView>> {
        let saved = UpdateRouting {
            id: id.0,
            spec: body.0.spec()?,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(saved.into()))
    }

    /// Delete a notification policy; its alert groups are dropped.
    #[oai(
        path = "/api/alerting/policies/:id",
        method = "delete",
        operation_id = "deleteAlertPolicy"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        DeleteRouting::<PolicySpec>::new(id.0)
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }
}

#[cfg(test)]
mod tests {
    use reap3r_actors::notify::routing::*;
    use serde_json::Value;

    /// The schema's literal bounds are the routing operations' constants.
    #[test]
    fn schema_bounds_are_the_domain_limits() {
        let spec: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let props = &spec["components"]["schemas"]["PolicyRequest"]["properties"];
        assert_eq!(props["name"]["maxLength"], MAX_ROUTING_NAME_CHARS as u64);
        assert_eq!(props["tags"]["maxItems"], MAX_SCOPE_VALUES as u64);
        assert_eq!(
            props["integrations"]["maxItems"],
            MAX_POLICY_INTEGRATIONS as u64
        );
        assert_eq!(props["escalation"]["maxItems"], MAX_ESCALATION_STEPS as u64);
        assert_eq!(props["group_wait_s"]["maximum"], MAX_GROUP_WAIT_S as f64);
        assert_eq!(
            props["group_interval_s"]["minimum"],
            MIN_GROUP_INTERVAL_S as f64
        );
        assert_eq!(
            props["group_interval_s"]["maximum"],
            MAX_GROUP_INTERVAL_S as f64
        );
        assert_eq!(
            props["repeat_interval_s"]["minimum"],
            MIN_REPEAT_INTERVAL_S as f64
        );
        assert_eq!(
            props["repeat_interval_s"]["maximum"],
            MAX_REPEAT_INTERVAL_S as f64
        );
        let step = &spec["components"]["schemas"]["EscalationStepBody"]["properties"];
        assert_eq!(
            step["after_minutes"]["maximum"],
            MAX_ESCALATION_MINUTES as f64
        );
        assert_eq!(
            step["after_minutes"]["minimum"],
            MIN_ESCALATION_MINUTES as f64
        );
        let silence = &spec["components"]["schemas"]["SilenceRequest"]["properties"];
        assert_eq!(silence["matchers"]["maxItems"], MAX_SILENCE_MATCHERS as u64);
        assert_eq!(
            silence["comment"]["maxLength"],
            MAX_SILENCE_COMMENT_CHARS as u64
        );
        let window = &spec["components"]["schemas"]["MaintenanceRequest"]["properties"];
        assert_eq!(window["name"]["maxLength"], MAX_ROUTING_NAME_CHARS as u64);
        assert_eq!(window["time_zone"]["maxLength"], MAX_TIME_ZONE_CHARS as u64);
        assert_eq!(
            window["duration_minutes"]["maximum"],
            MAX_WEEKLY_DURATION_MINUTES as f64
        );
    }
}
