//! What routing missed while it was down. Alerting commits an event change, then hands it to
//! routing's in-memory queue; a crash or SIGKILL between the two loses the change, although
//! the `alert_events` row holds it. So when routing (re)builds its core it compares the groups
//! it persisted with the event rows and derives the changes it never saw:
//!
//! - a firing event no group tracks → `Fired` (then `Acked` if it was acknowledged), so it is
//!   notified once, as any new alert;
//! - an event a group tracks as firing whose row is resolved → `Resolved`;
//! - acknowledged, or snoozed until another time, while its group says otherwise → `Acked` /
//!   `Snoozed`.
//!
//! Nothing a group already holds as it is yields a change, so nothing already notified is sent
//! again. The changes go to the core before the queued ones: those are in commit order, and
//! replaying one the reconciliation already applied changes nothing (an event fires once; a
//! resolve, ack or snooze of the same event sets what is already set). A pure function: the
//! driver reads the rows.

use std::collections::{BTreeMap, HashMap};

use reap3r_store::{AlertEvent, Uuid};

use super::group::{AlertFacts, Group};
use crate::alerts::{AgentFacts, AlertChange, AlertChangeKind, change_of};

/// What the groups hold of one event they track as firing (over all its groups).
struct Tracked<'a> {
    facts: &'a AlertFacts,
    /// Every group has it acknowledged.
    acked: bool,
    snoozed_until_ms: Option<i64>,
}

/// The events the groups track as firing; their rows must be read too (they may have resolved).
pub fn tracked_firing<'a>(groups: impl Iterator<Item = &'a Group>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = groups
        .flat_map(|g| g.alerts.values())
        .filter(|a| a.resolved_at_ms.is_none())
        .map(|a| a.facts.event_id)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The changes that bring `groups` in line with `events`: the rows of every firing event and of
/// every event in [`tracked_firing`]. `agents` describes the agents of firing events no group
/// tracks (hostname, tags, folder: what policies match on).
pub fn missed_changes<'a>(
    groups: impl Iterator<Item = &'a Group>,
    events: &[AlertEvent],
    agents: &HashMap<Uuid, AgentFacts>,
    now_ms: i64,
) -> Vec<AlertChange> {
    let mut tracked: BTreeMap<Uuid, Tracked<'a>> = BTreeMap::new();
    for a in groups
        .flat_map(|g| g.alerts.values())
        .filter(|a| a.resolved_at_ms.is_none())
    {
        tracked
            .entry(a.facts.event_id)
            .and_modify(|t| t.acked &= a.acked)
            .or_insert(Tracked {
                facts: &a.facts,
                acked: a.acked,
                snoozed_until_ms: a.snoozed_until_ms,
            });
    }
    let mut out = Vec::new();
    for event in events {
        let change = |kind, facts| change_of(event, kind, facts, now_ms);
        let Some(t) = tracked.get(&event.id) else {
            if event.state == "firing" {
                let facts = event
                    .agent_id
                    .and_then(|a| agents.get(&a).cloned())
                    .unwrap_or_default();
                out.push(change(AlertChangeKind::Fired, facts.clone()));
                if event.acked_at.is_some() {
                    out.push(change(AlertChangeKind::Acked, facts));
                }
            }
            continue;
        };
        // Tracked events keep the facts the groups matched them with.
        let facts = AgentFacts {
            hostname: t.facts.hostname.clone(),
            tags: t.facts.agent_tags.clone(),
            folder_id: t.facts.folder_id,
        };
        match event.state.as_str() {
            "resolved" => out.push(change(AlertChangeKind::Resolved, facts)),
            "firing" => {
                if event.acked_at.is_some() && !t.acked {
                    out.push(change(AlertChangeKind::Acked, facts.clone()));
                }
                // A snooze the group has not seen. Only one that still runs on either side
                // matters: a group's snooze that ended is told (or was) by the group itself,
                // and one that began and ended while routing was down cannot be told from
                // one the group already told and cleared, so it is not told again.
                let live = |until: Option<i64>| until.is_some_and(|u| u > now_ms);
                if event.snoozed_until != t.snoozed_until_ms
                    && (live(event.snoozed_until) || live(t.snoozed_until_ms))
                {
                    out.push(change(AlertChangeKind::Snoozed, facts));
                }
            }
            _ => {}
        }
    }
    out
}
