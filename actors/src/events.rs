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
