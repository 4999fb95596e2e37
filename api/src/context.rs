//! What every handler shares: the store, the clock, fleet events and counters, settings, and the
//! hooks into the rest of the node (readiness, withdrawing an agent's live session).

use std::sync::Arc;

use reap3r_actors::access::AccessSettings;
use reap3r_actors::alerts::AlertSink;
pub use reap3r_actors::enrolment::EnrolmentInfo;
use reap3r_actors::files::FileHub;
use reap3r_actors::notify::Channels;
use reap3r_actors::shell::ShellHub;
use reap3r_actors::{Clock, Domain, EventBus, FleetStats, JobEngine};
use reap3r_store::{Store, Uuid};

use crate::metrics::HttpMetrics;
use crate::rate_limit::RateSettings;

/// Security and limit settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Token lifetimes, MFA and lockout policy, handed to the access operations.
    pub access: AccessSettings,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The token bucket of every credential (and of every client address, for requests
    /// without a valid one).
    pub rate: RateSettings,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            access: AccessSettings::default(),
            max_body_bytes: 256 * 1024,
            rate: RateSettings::DEFAULT,
        }
    }
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
    /// The remote shells this node relays; `None` where no node runs.
    pub shells: Option<ShellHub>,
    /// The file transfers this node runs; `None` where no node runs.
    pub files: Option<FileHub>,
    /// Sends integration tests now (the notifier delivers everything else).
    pub notify: Channels,
    /// Where operator acks and resolves of alerts are handed to notification routing.
    pub alert_sink: Arc<dyn AlertSink>,
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
