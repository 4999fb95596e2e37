//! The API's routes, one module per resource, each mapping HTTP to the domain's operations; and
//! what they share: tags and page sizes.

pub mod agents;
pub mod alerting_events;
pub mod alerting_integrations;
pub mod alerting_maintenance;
pub mod alerting_policies;
pub mod alerting_rules;
pub mod alerting_silences;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod files;
pub mod groups;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod orgs;
pub mod shell;
pub mod tokens;
pub mod users;
pub mod vault;
pub mod vault_views;
pub mod wake;
pub mod ws;

use crate::error::{ApiError, ApiResult};
use poem_openapi::Tags;

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
    #[oai(rename = "Enrollment")]
    Enrolment,
    /// API keys for integrations.
    ApiKeys,
    /// The hash-chained audit log.
    Audit,
    /// Live event stream.
    Events,
    /// Jobs run on agents, and their results.
    Jobs,
    /// Alerting: rules, the alert events they raise and operator actions on them, notification
    /// policies, silences, maintenance windows, integrations and the delivery log.
    Alerting,
    /// Agent metrics: series, CSV export and fleet views.
    Metrics,
    /// The vault: secrets, their versions, sharing, rotation and the MFA-gated reveal.
    Vault,
    /// Remote shells on agents: open, attach over a WebSocket, sessions and recordings.
    Shell,
    /// Files: uploads, downloads (with ranges), pushes to and pulls from agents, transfers.
    Files,
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
