//! After an alert event change is committed: the [`AlertChange`] for notification routing
//! (through the [`AlertSink`]) and the `alert_fired` / `alert_resolved` / `alert_acked` fleet
//! event for UIs (a snooze has no fleet event of its own: its audit record is published). One
//! place for both, used by the rule actors and the operator operations.

use reap3r_store::{AlertAgent, AlertEvent, Uuid};

use super::{AlertChange, AlertChangeKind, AlertSink, Severity};
use crate::{Domain, FleetEvent};

/// What a change says about the agent (hostname, tags, folder), when known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFacts {
    pub hostname: Option<String>,
    pub tags: Vec<String>,
    pub folder_id: Option<Uuid>,
}

impl From<&AlertAgent> for AgentFacts {
    fn from(a: &AlertAgent) -> Self {
        Self {
            hostname: Some(a.hostname.clone()),
            tags: a.tags.iter().map(|(_, name)| name.clone()).collect(),
            folder_id: a.folder_id,
        }
    }
}

impl AgentFacts {
    /// Reads the facts of an event's agent (operator operations, which have no directory).
    pub async fn load(domain: &Domain, org_id: Uuid, agent_id: Option<Uuid>) -> Self {
        let Some(agent_id) = agent_id else {
            return Self::default();
        };
        let agent = domain
            .store
            .agent_in_org(org_id, agent_id)
            .await
            .ok()
            .flatten();
        let tags = domain
            .store
            .agent_tags(org_id, agent_id)
            .await
            .unwrap_or_default();
        Self {
            hostname: agent.as_ref().map(|a| a.hostname.clone()),
            tags: tags.into_iter().map(|t| t.name).collect(),
            folder_id: agent.and_then(|a| a.folder_id),
        }
    }
}

/// Hands a committed change to routing and announces it. `by` names who acked or resolved.
pub fn announce(
    domain: &Domain,
    sink: &dyn AlertSink,
    event: &AlertEvent,
    kind: AlertChangeKind,
    facts: AgentFacts,
    by: &str,
    at_ms: i64,
) {
    let fleet = match kind {
        AlertChangeKind::Fired => Some(FleetEvent::AlertFired {
            event_id: event.id,
            org_id: event.org_id,
            rule_id: event.rule_id,
            rule_name: event.rule_name.clone(),
            agent_id: event.agent_id,
            severity: event.severity.clone(),
            summary: event.summary.clone(),
            value: event.value,
        }),
        AlertChangeKind::Resolved => Some(FleetEvent::AlertResolved {
            event_id: event.id,
            org_id: event.org_id,
            rule_id: event.rule_id,
            agent_id: event.agent_id,
            by: by.to_owned(),
        }),
        AlertChangeKind::Acked => Some(FleetEvent::AlertAcked {
            event_id: event.id,
            org_id: event.org_id,
            rule_id: event.rule_id,
            agent_id: event.agent_id,
            by: by.to_owned(),
        }),
        AlertChangeKind::Snoozed => None,
    };
    if let Some(fleet) = fleet {
        domain.events.publish(fleet);
    }
    sink.alert_changed(change_of(event, kind, facts, at_ms));
}

/// [`announce`] for an operator's operation: the agent's facts are read first (operations have
/// no directory).
pub async fn announce_by_operator(
    domain: &Domain,
    sink: &dyn AlertSink,
    event: &AlertEvent,
    kind: AlertChangeKind,
    by: &str,
    at_ms: i64,
) {
    let facts = AgentFacts::load(domain, event.org_id, event.agent_id).await;
    announce(domain, sink, event, kind, facts, by, at_ms);
}

/// The change routing gets for `event` (as committed) with `kind`; also how routing rebuilds
/// a change it missed from the event row.
pub fn change_of(
    event: &AlertEvent,
    kind: AlertChangeKind,
    facts: AgentFacts,
    at_ms: i64,
) -> AlertChange {
    AlertChange {
        event_id: event.id,
        rule_id: event.rule_id,
        rule_name: event.rule_name.clone(),
        org_id: event.org_id,
        agent_id: event.agent_id,
        hostname: facts.hostname,
        agent_tags: facts.tags,
        folder_id: facts.folder_id,
        severity: event.severity.parse().unwrap_or(Severity::Warning),
        kind,
        fired_at_ms: event.fired_at.unwrap_or(event.pending_at),
        at_ms,
        summary: event.summary.clone(),
        value: event.value,
        snoozed_until_ms: event.snoozed_until,
    }
}

/// A sink that drops every change: for a node without notification routing yet, and for the
/// CLI.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAlertSink;

impl AlertSink for NoAlertSink {
    fn alert_changed(&self, _change: AlertChange) {}
}
