//! Remote shells: an operator with `shell:open` (and a fresh MFA step-up, if they have MFA)
//! opens a shell on an online agent; the server signs a grant naming the session, the agent,
//! the operator and the limits, and the agent runs its shell on a PTY behind a channel of its
//! own (`reap3r_wire::Channel`). Every session is recorded (asciicast v2, gzip, capped) and
//! audited when it opens and when it closes, with its byte counts.
//!
//! - [`open`]: the operations — [`OpenShell`], [`AttachShell`], [`GetShellSession`], [`ListShellSessions`],
//!   [`ReadShellRecording`].
//! - [`relay`]: one task per session, between the operator's socket and the agent's channel.
//! - [`core`]: the session's rules (start, limits, reattach), pure.
//! - [`recording`]: the asciicast writer.

mod core;
mod open;
mod recording;
mod relay;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reap3r_store::Uuid;
use reap3r_wire::SigningKey;
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use self::core::{AGENT_RETRY_MS, Effect, Limits, ShellCore};
pub(crate) use open::truncate;
pub use open::{
    AttachShell, GetShellSession, ListShellSessions, OpenShell, ReadShellRecording,
    ShellRecordingFile, shell_target, step_up_required,
};
pub use recording::{CHUNK_BYTES, CapReached, CastHeader, Recording};
pub use relay::{ShellAttachment, ShellEvent, ShellKeys};

use crate::{AgentRouter, Domain, DrainSignal};

/// Limits and policy of remote shells (defaults are what a node runs with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellSettings {
    /// Users with MFA need a step-up in the last five minutes to open a shell.
    pub require_step_up: bool,
    /// Sessions not yet ended, per agent and per operator.
    pub max_per_agent: u32,
    pub max_per_operator: u32,
    /// How long after `POST /api/agents/{id}/shell` the socket must attach (and the agent
    /// start the shell): the grant's deadline.
    pub open_timeout_s: u32,
    pub idle_timeout_s: u32,
    pub max_duration_s: u32,
    /// How long a session waits for the operator's socket, or the agent's channel, to come
    /// back after a cut.
    pub reattach_grace_s: u32,
    /// Largest recording (uncompressed asciicast); a session that reaches it ends.
    pub recording_cap_bytes: u64,
    /// Recordings of sessions that ended longer ago than this are deleted (the sessions' records
    /// and audit entries stay).
    pub retention_days: u32,
}

impl Default for ShellSettings {
    fn default() -> Self {
        Self {
            require_step_up: true,
            max_per_agent: 2,
            max_per_operator: 5,
            open_timeout_s: 60,
            idle_timeout_s: 15 * 60,
            max_duration_s: 4 * 3600,
            reattach_grace_s: 60,
            recording_cap_bytes: 64 * 1024 * 1024,
            retention_days: 90,
        }
    }
}

impl ShellSettings {
    pub fn limits(&self) -> Limits {
        Limits {
            idle_timeout_ms: i64::from(self.idle_timeout_s) * 1000,
            max_duration_ms: i64::from(self.max_duration_s) * 1000,
            reattach_grace_ms: i64::from(self.reattach_grace_s) * 1000,
        }
    }
}

/// How often recordings past retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The shells this node relays; cheap to clone.
#[derive(Clone)]
pub struct ShellHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    domain: Domain,
    router: Arc<dyn AgentRouter>,
    server_key: Arc<SigningKey>,
    node_id: String,
    settings: ShellSettings,
    running: Mutex<HashMap<Uuid, mpsc::Sender<relay::RelayMsg>>>,
    /// Woken each time a relay ends (shutdown waits on it).
    relay_ended: tokio::sync::Notify,
}

impl std::fmt::Debug for ShellHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellHub")
            .field("node_id", &self.inner.node_id)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl ShellHub {
    pub fn new(
        domain: Domain,
        router: Arc<dyn AgentRouter>,
        server_key: Arc<SigningKey>,
        node_id: String,
        settings: ShellSettings,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner {
                domain,
                router,
                server_key,
                node_id,
                settings,
                running: Mutex::new(HashMap::new()),
                relay_ended: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn settings(&self) -> &ShellSettings {
        &self.inner.settings
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::Sender<relay::RelayMsg>>> {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn relay_ended(&self, id: Uuid) {
        self.running().remove(&id);
        self.inner.relay_ended.notify_waiters();
    }

    /// Sessions relayed right now.
    pub fn active(&self) -> usize {
        self.running().len()
    }

    /// Ends (and audits) the sessions this node left open when it last stopped: their relays
    /// died with the process, so nothing can reach them any more.
    pub async fn recover(&self) -> crate::DomainResult<usize> {
        relay::end_orphans(self).await
    }

    /// Prunes recordings past retention every hour until the drain signal.
    pub fn spawn_maintenance(&self, mut drain: DrainSignal) {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = drain.started() => return,
                }
                let keep_ms = i64::from(hub.inner.settings.retention_days) * 86_400_000;
                let before = hub.inner.domain.now_ms().saturating_sub(keep_ms);
                match hub.inner.domain.store.prune_shell_recordings(before).await {
                    Ok(0) => {}
                    Ok(n) => info!(chunks = n, "pruned shell recordings past retention"),
                    Err(err) => warn!(%err, "could not prune shell recordings"),
                }
            }
        });
    }

    /// Ends every session this node relays ("the server is shutting down") and waits, up to
    /// `grace`, for their records and recordings to be written.
    pub async fn shutdown(&self, grace: Duration) {
        let relays: Vec<_> = self.running().values().cloned().collect();
        for relay in &relays {
            let _ = relay.try_send(relay::RelayMsg::Shutdown);
        }
        let left =
            crate::drain::wait_until_idle(&self.inner.relay_ended, grace, || self.active()).await;
        if left > 0 {
            warn!(sessions = left, "shell sessions still ending at shutdown");
        }
    }
}
