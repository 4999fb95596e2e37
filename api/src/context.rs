//! What every handler shares: the store, the clock, fleet events and counters, settings, and the
//! hooks into the rest of the node (readiness, withdrawing an agent's live session).

use std::sync::Arc;

use reap3r_actors::{Clock, Domain, EventBus, FleetStats, JobEngine};
use reap3r_store::{Store, Uuid};

use crate::metrics::HttpMetrics;

/// Security and limit settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub access_ttl_ms: i64,
    pub refresh_ttl_ms: i64,
    pub mfa_challenge_ttl_ms: i64,
    /// Wrong codes allowed per MFA challenge before it is spent.
    pub mfa_max_attempts: i64,
    /// Failed logins per account within the window before the account is locked out.
    pub lockout_account_failures: u64,
    /// Failed logins per source address within the window before that address is refused.
    pub lockout_ip_failures: u64,
    pub lockout_window_ms: i64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Issuer shown in authenticator apps.
    pub totp_issuer: String,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            access_ttl_ms: 15 * 60 * 1000,
            refresh_ttl_ms: 7 * 24 * 3600 * 1000,
            mfa_challenge_ttl_ms: 5 * 60 * 1000,
            mfa_max_attempts: 5,
            lockout_account_failures: 5,
            lockout_ip_failures: 20,
            lockout_window_ms: 15 * 60 * 1000,
            max_body_bytes: 256 * 1024,
            totp_issuer: "Reap3r".into(),
        }
    }
}

/// What an agent needs to enrol with this server; shown with enrolment tokens.
#[derive(Debug, Clone, Default)]
pub struct EnrolmentInfo {
    /// `host:port` agents dial.
    pub server_addr: String,
    /// SHA-256 of the server certificate, hex.
    pub cert_fingerprint: String,
    /// Ed25519 server key, hex.
    pub server_key: String,
}

/// Hooks into the running node, so the API never talks to agents itself.
pub trait NodeHooks: Send + Sync + 'static {
    /// Whether the QUIC gateway is accepting connections.
    fn quic_listening(&self) -> bool;
    /// Closes an agent's live session after it was revoked, rejected or deleted.
    fn withdraw_agent(&self, agent_id: Uuid, reason: &str);
}

/// Used where no node runs (unit tests, spec generation).
#[derive(Debug, Default)]
pub struct NoNode;

impl NodeHooks for NoNode {
    fn quic_listening(&self) -> bool {
        false
    }
    fn withdraw_agent(&self, _agent_id: Uuid, _reason: &str) {}
}

#[derive(Clone)]
pub struct ApiContext {
    /// Where every operation lives: handlers map HTTP to it.
    pub domain: Domain,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub events: EventBus,
    pub fleet_stats: Arc<FleetStats>,
    pub metrics: Arc<HttpMetrics>,
    pub settings: Arc<ApiSettings>,
    pub enrolment: Arc<EnrolmentInfo>,
    pub node: Arc<dyn NodeHooks>,
    /// The job engine; `None` where no node runs (spec generation, unit tests).
    pub jobs: Option<JobEngine>,
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ApiContext {
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }
}
