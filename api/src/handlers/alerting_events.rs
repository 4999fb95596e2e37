//! `/api/alerting/events` and `/api/alerting/stats`: alert events (one per rule and agent while
//! active), their notes and history, and the operator actions on them — mapped to the domain's
//! event operations (`reap3r_actors::alerts`).

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use reap3r_actors::alerts::{
    self, AckAlert, AddAlertNote, ListEvents, ResolveAlert, Severity, SnoozeAlert,
};
use reap3r_store::{AlertEvent, AlertHistoryEntry, AlertNote, Uuid};

use super::ApiTags;
use super::alerting_rules::SeverityView;
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AlertStateView {
    Pending,
    Firing,
    Resolved,
}

impl AlertStateView {
    fn as_str(self) -> &'static str {
        match self {
            AlertStateView::Pending => "pending",
            AlertStateView::Firing => "firing",
            AlertStateView::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => AlertStateView::Pending,
            "firing" => AlertStateView::Firing,
            _ => AlertStateView::Resolved,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AlertEventView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub rule_id: Uuid,
    pub rule_name: String,
    pub agent_id: Option<Uuid>,
    pub severity: SeverityView,
    pub state: AlertStateView,
    /// One line for humans, e.g. `cpu.percent avg 300s 97.20 > 90`.
    pub summary: String,
    /// The value behind the last transition, if the rule has one.
    pub value: Option<f64>,
    pub pending_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// `system` when the condition cleared, else the operator.
    pub resolved_by: Option<String>,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub snoozed_until: Option<i64>,
    pub updated_at: i64,
}

impl From<AlertEvent> for AlertEventView {
    fn from(e: AlertEvent) -> Self {
        Self {
            id: e.id,
            org_id: e.org_id,
            rule_id: e.rule_id,
            rule_name: e.rule_name,
            agent_id: e.agent_id,
            severity: e
                .severity
                .parse::<Severity>()
                .unwrap_or(Severity::Warning)
                .into(),
            state: AlertStateView::parse(&e.state),
            summary: e.summary,
            value: e.value,
            pending_at: e.pending_at,
            fired_at: e.fired_at,
            resolved_at: e.resolved_at,
            resolved_by: e.resolved_by,
            acked_at: e.acked_at,
            acked_by: e.acked_by,
            snoozed_until: e.snoozed_until,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct AlertEventPage {
    pub items: Vec<AlertEventView>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AlertNoteView {
    pub id: Uuid,
    pub author: String,
    pub body: String,
    pub created_at: i64,
}

impl From<AlertNote> for AlertNoteView {
    fn from(n: AlertNote) -> Self {
        Self {
            id: n.id,
            author: n.author,
            body: n.body,
            created_at: n.created_at,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AlertHistoryView {
    pub at: i64,
    /// `system` for automated transitions, else the operator.
    pub actor: String,
    /// pending, fired, resolved, acked, snoozed or note.
    pub action: String,
    pub detail: Option<String>,
}

impl From<AlertHistoryEntry> for AlertHistoryView {
    fn from(h: AlertHistoryEntry) -> Self {
        Self {
            at: h.at,
            actor: h.actor,
            action: h.action,
            detail: h.detail,
        }
    }
}

#[derive(Debug, Object)]
pub struct AlertEventDetailView {
    pub event: AlertEventView,
    pub notes: Vec<AlertNoteView>,
    pub history: Vec<AlertHistoryView>,
}

#[derive(Debug, Object)]
pub struct ResolveAlertRequest {
    /// Why, for the history.
    #[oai(validator(max_length = 4000))]
    pub reason: Option<String>,
}

#[derive(Debug, Object)]
pub struct SnoozeAlertRequest {
    /// How long from now, 1 to 604800 s.
    #[oai(validator(minimum(value = "1"), maximum(value = "604800")))]
    pub for_s: u32,
}

#[derive(Debug, Object)]
pub struct AlertNoteRequest {
    #[oai(validator(max_length = 4000, pattern = r"\S"))]
    pub body: String,
}

#[derive(Debug, Object)]
pub struct TopAlertingAgent {
    pub agent_id: Uuid,
    /// Firing events of the agent.
    pub firing: i64,
}

#[derive(Debug, Object)]
pub struct AlertStatsView {
    /// Firing and not acknowledged.
    pub open: i64,
    /// Firing and acknowledged.
    pub acked: i64,
    /// Firing with severity critical.
    pub critical: i64,
    /// Pending (waiting for their `for`).
    pub pending: i64,
    pub top_agents: Vec<TopAlertingAgent>,
}

pub struct AlertEventsApi;

#[OpenApi(tag = "ApiTags::Alerting")]
impl AlertEventsApi {
    /// List alert events, newest first.
    #[oai(
        path = "/api/alerting/events",
        method = "get",
        operation_id = "listAlertEvents"
    )]
    #[expect(clippy::too_many_arguments, reason = "one parameter per query filter")]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        state: Query<Option<AlertStateView>>,
        severity: Query<Option<SeverityView>>,
        /// Only events of this rule.
        rule_id: Query<Option<Uuid>>,
        /// Only events of this agent.
        agent_id: Query<Option<Uuid>>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 100))]
        before: Query<Option<String>>,
        /// 1 to 200, default 50.
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<AlertEventPage>> {
        let page = ListEvents {
            state: state.0.map(|s| s.as_str().to_owned()),
            severity: severity.0.map(Severity::from),
            rule_id: rule_id.0,
            agent_id: agent_id.0,
            before: before.0,
            limit: limit.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(AlertEventPage {
            items: page.events.into_iter().map(AlertEventView::from).collect(),
            next_cursor: page.next,
        }))
    }

    /// Get an alert event with its notes and history.
    #[oai(
        path = "/api/alerting/events/:id",
        method = "get",
        operation_id = "getAlertEvent"
    )]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<AlertEventDetailView>> {
        let d = alerts::get_event(&ctx.domain, auth.caller(), id.0).await?;
        Ok(Json(AlertEventDetailView {
            event: d.event.into(),
            notes: d.notes.into_iter().map(AlertNoteView::from).collect(),
            history: d.history.into_iter().map(AlertHistoryView::from).collect(),
        }))
    }

    /// Acknowledge an open alert (escalation stops); 409 if resolved or already acknowledged.
    #[oai(
        path = "/api/alerting/events/:id/ack",
        method = "post",
        operation_id = "ackAlertEvent"
    )]
    async fn ack(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<AlertEventView>> {
        let e = AckAlert { id: id.0 }
            .run(&ctx.domain, auth.caller(), &*ctx.alert_sink)
            .await?;
        Ok(Json(e.into()))
    }

    /// Resolve an alert by hand; the rule starts over for its agent. 409 if already resolved.
    #[oai(
        path = "/api/alerting/events/:id/resolve",
        method = "post",
        operation_id = "resolveAlertEvent"
    )]
    async fn resolve(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<ResolveAlertRequest>,
    ) -> ApiResult<Json<AlertEventView>> {
        let e = ResolveAlert {
            id: id.0,
            reason: body.0.reason,
        }
        .run(&ctx.domain, auth.caller(), &*ctx.alert_sink)
        .await?;
        Ok(Json(e.into()))
    }

    /// Snooze an open alert: no reminders or escalation for it until then; if it still fires
    /// when the snooze ends, it is notified once.
    #[oai(
        path = "/api/alerting/events/:id/snooze",
        method = "post",
        operation_id = "snoozeAlertEvent"
    )]
    async fn snooze(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<SnoozeAlertRequest>,
    ) -> ApiResult<Json<AlertEventView>> {
        let e = SnoozeAlert {
            id: id.0,
            for_s: body.0.for_s,
        }
        .run(&ctx.domain, auth.caller(), &*ctx.alert_sink)
        .await?;
        Ok(Json(e.into()))
    }

    /// Add a note to an alert event.
    #[oai(
        path = "/api/alerting/events/:id/notes",
        method = "post",
        operation_id = "addAlertEventNote"
    )]
    async fn note(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<AlertNoteRequest>,
    ) -> ApiResult<Json<AlertNoteView>> {
        let n = AddAlertNote {
            id: id.0,
            body: body.0.body,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(n.into()))
    }

    /// Open, acknowledged and critical counts, and the agents with the most firing alerts.
    #[oai(
        path = "/api/alerting/stats",
        method = "get",
        operation_id = "getAlertStats"
    )]
    async fn stats(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// How many top agents, 1 to 50, default 10.
        #[oai(validator(minimum(value = "1"), maximum(value = "50")))]
        top: Query<Option<u32>>,
    ) -> ApiResult<Json<AlertStatsView>> {
        let s = alerts::alert_stats(&ctx.domain, auth.caller(), top.0.unwrap_or(10)).await?;
        Ok(Json(AlertStatsView {
            open: s.open,
            acked: s.acked,
            critical: s.critical,
            pending: s.pending,
            top_agents: s
                .top_agents
                .into_iter()
                .map(|(agent_id, firing)| TopAlertingAgent { agent_id, firing })
                .collect(),
        }))
    }
}
