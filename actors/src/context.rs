//! What every session shares: store, server key, clock, settings, counters and events.

use std::sync::Arc;

use reap3r_store::Store;
use reap3r_wire::{AgentConfig, SigningKey};

use crate::metrics::{MetricsIntake, MetricsSettings};
use crate::{Clock, Domain, EventBus, FleetStats, JobRouter, SignatureVerifier};

/// Settings the fleet layer needs from the server configuration.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Identifies this control-plane node in agent leases.
    pub node_id: String,
    /// Config sent to agents at hello.
    pub agent_config: AgentConfig,
    /// An agent is offline after this many heartbeat intervals without a message.
    pub missed_heartbeats: u32,
    /// How long a connection may stay without a hello or enrolment.
    pub handshake_timeout_ms: u64,
    /// How often `last_seen` is written and revocations are checked.
    pub presence_flush_ms: u64,
    /// How long past a job's timeout (or a cancel) the server waits for the agent's result
    /// before deciding the outcome itself.
    pub job_grace_ms: u64,
    /// Metrics ingestion, rollups and retention.
    pub metrics: MetricsSettings,
    /// The release key's public half, sent in every welcome (agents pin it).
    pub release_key: Option<[u8; 32]>,
}

impl FleetSettings {
    pub fn for_test() -> Self {
        Self {
            node_id: "test-node".into(),
            agent_config: AgentConfig {
                heartbeat_interval_s: 1,
                metrics_interval_s: 5,
            },
            missed_heartbeats: 3,
            handshake_timeout_ms: 5_000,
            presence_flush_ms: 200,
            job_grace_ms: 2_000,
            metrics: MetricsSettings::default(),
            release_key: None,
        }
    }

    /// `last_seen` is written at most once per this many ms per agent: half a heartbeat
    /// interval, so every heartbeat of an agent on schedule is still recorded.
    pub fn last_seen_grain_ms(&self) -> u64 {
        u64::from(self.agent_config.heartbeat_interval_s) * 500
    }

    pub fn heartbeat_timeout_ms(&self) -> u64 {
        u64::from(self.agent_config.heartbeat_interval_s) * 1000 * u64::from(self.missed_heartbeats)
    }
}

/// Shared by all sessions; cheap to clone.
#[derive(Clone)]
pub struct FleetContext {
    pub store: Store,
    pub server_key: Arc<SigningKey>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<FleetSettings>,
    pub stats: Arc<FleetStats>,
    pub events: EventBus,
    /// Reaches the job supervisor once it runs.
    pub jobs: JobRouter,
    /// Checks agent signatures in batches across sessions.
    pub verifier: SignatureVerifier,
    /// Where sessions hand verified metrics samples to the metrics writer (bounded).
    pub metrics: MetricsIntake,
    /// The master keys operations seal and open with.
    pub keys: crate::vault::Keyring,
}

impl std::fmt::Debug for FleetContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetContext")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl FleetContext {
    /// The domain operations see: this context's store, clock and events.
    pub fn domain(&self) -> Domain {
        Domain::new(
            self.store.clone(),
            self.clock.clone(),
            self.events.clone(),
            self.keys.clone(),
        )
    }
}
