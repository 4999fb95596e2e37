//! The API operations, one module per resource, and what they share: tags, the audit helper
//! and input checks.

pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod groups;
pub mod health;
pub mod jobs;
pub mod orgs;
pub mod tokens;
pub mod users;
pub mod ws;

use poem_openapi::Tags;
use reap3r_actors::FleetEvent;
use reap3r_store::NewAuditEntry;

use crate::auth::Caller;
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

#[derive(Tags)]
pub enum ApiTags {
    /// Liveness and readiness.
    Health,
    /// Login, MFA, token refresh and the caller's own account.
    Auth,
    /// Operator accounts, their sessions and login events.
    Users,
    /// Organisations and MSSP assignments.
    Orgs,
    /// Sites, companies, folders and tags that group agents.
    Groups,
    /// Enrolled agents.
    Agents,
    /// Enrolment tokens that let new agents in.
    Enrollment,
    /// API keys for integrations.
    ApiKeys,
    /// The hash-chained audit log.
    Audit,
    /// Live event stream.
    Events,
    /// Jobs run on agents, and their results.
    Jobs,
}

/// Records a mutation in the audit log and streams it to UIs. A mutation whose audit record
/// cannot be written is reported as failed, so nothing changes without a trace.
pub async fn audit(
    ctx: &ApiContext,
    caller: &Caller,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
) -> ApiResult<()> {
    audit_as(
        ctx,
        Some(caller.org_id),
        &caller.actor(),
        action,
        target,
        details,
    )
    .await
}

pub async fn audit_as(
    ctx: &ApiContext,
    org_id: Option<reap3r_store::Uuid>,
    actor: &str,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
) -> ApiResult<()> {
    let record = ctx
        .store
        .append_audit(
            &NewAuditEntry {
                org_id,
                actor: actor.to_owned(),
                action: action.to_owned(),
                target,
                details,
            },
            ctx.now_ms(),
        )
        .await?;
    ctx.events.publish(FleetEvent::Audit {
        org_id: record.org_id,
        seq: record.seq,
        actor: record.actor,
        action: record.action,
        target: record.target,
        ts: record.ts,
    });
    Ok(())
}

/// Trims a required text field and checks its length.
pub fn required_text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(value.to_owned())
}

/// Trims an optional text field; empty becomes `None`.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> ApiResult<Option<String>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => required_text(field, v, max).map(Some),
    }
}

/// Page size: default 100, between 1 and `max`.
pub fn page_limit(limit: Option<i64>, max: i64) -> ApiResult<i64> {
    match limit {
        None => Ok(100.min(max)),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}
