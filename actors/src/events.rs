//! Fleet events fanned out to UIs and other nodes.

use reap3r_store::Uuid;
use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FleetEvent {
    AgentEnrolled {
        agent_id: Uuid,
        org_id: Uuid,
        hostname: String,
        pending: bool,
    },
    AgentOnline {
        agent_id: Uuid,
        org_id: Uuid,
        hostname: String,
    },
    AgentOffline {
        agent_id: Uuid,
        org_id: Uuid,
        reason: String,
    },
    /// A job or one of its targets changed state. `agent_id` is set for a target's change;
    /// `counts` always carries the job's per-state totals after the change.
    JobUpdate {
        job_id: Uuid,
        org_id: Uuid,
        agent_id: Option<Uuid>,
        state: String,
        counts: reap3r_store::TargetCounts,
    },
    /// Live output of a running job (not stored beyond the result's capped output).
    JobOutput {
        job_id: Uuid,
        org_id: Uuid,
        agent_id: Uuid,
        stream: &'static str,
        offset: u64,
        data: String,
    },
    /// An alert event started firing (its rule's `for` elapsed).
    AlertFired {
        event_id: Uuid,
        org_id: Uuid,
        rule_id: Uuid,
        rule_name: String,
        agent_id: Option<Uuid>,
        severity: String,
        summary: String,
        value: Option<f64>,
    },
    /// An alert event resolved: its condition cleared (`by` = `system`) or an operator resolved it.
    AlertResolved {
        event_id: Uuid,
        org_id: Uuid,
        rule_id: Uuid,
        agent_id: Option<Uuid>,
        by: String,
    },
    /// An operator acknowledged an alert event.
    AlertAcked {
        event_id: Uuid,
        org_id: Uuid,
        rule_id: Uuid,
        agent_id: Option<Uuid>,
        by: String,
    },
    /// A file transfer started, moved on (about every MiB the receiver holds), or ended.
    FileTransfer {
        transfer_id: Uuid,
        org_id: Uuid,
        agent_id: Uuid,
        direction: &'static str,
        status: &'static str,
        bytes_done: u64,
        size: Option<u64>,
        attempts: u32,
        error: Option<String>,
    },
    /// A record appended to the audit log (a mutation through the API or the CLI).
    Audit {
        org_id: Option<Uuid>,
        seq: i64,
        actor: String,
        action: String,
        target: Option<String>,
        ts: i64,
    },
}

impl FleetEvent {
    /// The organisation the event belongs to; `None` for installation-wide audit records.
    pub fn org_id(&self) -> Option<Uuid> {
        match self {
            FleetEvent::AgentEnrolled { org_id, .. }
            | FleetEvent::AgentOnline { org_id, .. }
            | FleetEvent::AgentOffline { org_id, .. }
            | FleetEvent::JobUpdate { org_id, .. }
            | FleetEvent::JobOutput { org_id, .. }
            | FleetEvent::AlertFired { org_id, .. }
            | FleetEvent::AlertResolved { org_id, .. }
            | FleetEvent::AlertAcked { org_id, .. }
            | FleetEvent::FileTransfer { org_id, .. } => Some(*org_id),
            FleetEvent::Audit { org_id, .. } => *org_id,
        }
    }
}

/// A bounded broadcast: slow subscribers lose old events rather than holding memory.
#[derive(Debug, Clone)]
pub struct EventBus(broadcast::Sender<FleetEvent>);

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        Self(broadcast::channel(capacity).0)
    }

    pub fn publish(&self, event: FleetEvent) {
        // No subscribers is normal; nothing to do.
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.0.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(4096)
    }
}
