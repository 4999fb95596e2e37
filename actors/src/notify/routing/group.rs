//! One alert group of one policy and what it decides when its time comes: the first message
//! after group_wait, changes at most once per group_interval, a reminder after
//! repeat_interval, one message when a maintenance window over its alerts (or an alert's
//! snooze) ends, and escalation steps while nothing is acknowledged. A group is plain data (it is persisted as JSON after
//! each decision, in the transaction that enqueues the decision's messages).

use std::collections::BTreeMap;

use reap3r_store::Uuid;
use serde::{Deserialize, Serialize};

use super::model::{MaintenanceWindow, Policy, Silence, severity_one};
use crate::alerts::{AlertChange, Severity};
use crate::notify::{NotificationAlert, NotificationKind, NotificationMessage};

/// What routing keeps of an alert event to match it and to write messages about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertFacts {
    pub event_id: Uuid,
    pub rule_id: Uuid,
    pub rule_name: String,
    pub org_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub hostname: Option<String>,
    pub agent_tags: Vec<String>,
    pub folder_id: Option<Uuid>,
    #[serde(with = "severity_one")]
    pub severity: Severity,
    pub summary: String,
    pub fired_at_ms: i64,
}

impl From<&AlertChange> for AlertFacts {
    fn from(c: &AlertChange) -> Self {
        Self {
            event_id: c.event_id,
            rule_id: c.rule_id,
            rule_name: c.rule_name.clone(),
            org_id: c.org_id,
            agent_id: c.agent_id,
            hostname: c.hostname.clone(),
            agent_tags: c.agent_tags.clone(),
            folder_id: c.folder_id,
            severity: c.severity,
            summary: c.summary.clone(),
            fired_at_ms: c.fired_at_ms,
        }
    }
}

/// An alert inside a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedAlert {
    pub facts: AlertFacts,
    pub resolved_at_ms: Option<i64>,
    pub acked: bool,
    /// The group's integrations were told it fires.
    pub notified: bool,
    /// It was seen inside a maintenance window the last time the group looked.
    pub in_maintenance: bool,
    /// An operator snoozed it until then: like a maintenance window of its own. Cleared when
    /// the group sees it end. (Groups persisted before snoozes reached routing have none.)
    #[serde(default)]
    pub snoozed_until_ms: Option<i64>,
}

impl TrackedAlert {
    fn firing(&self) -> bool {
        self.resolved_at_ms.is_none()
    }

    fn snoozed(&self, now_ms: i64) -> bool {
        self.snoozed_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// Where escalation stands: `step` is the next step to fire; `due_at_ms` is `None` while it is
/// paused by maintenance (and once every step has fired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub step: usize,
    pub due_at_ms: Option<i64>,
}

/// One group: its alerts and its timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub policy_id: Uuid,
    pub org_id: Uuid,
    pub key: String,
    pub next_flush_at_ms: i64,
    pub last_sent_at_ms: Option<i64>,
    pub escalation: Option<Escalation>,
    pub alerts: BTreeMap<Uuid, TrackedAlert>,
}

/// One message for one integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub integration_id: Uuid,
    pub message: NotificationMessage,
}

/// What a group looks at when it decides: the time, its policy, the silences of its org and the
/// maintenance windows open now.
pub struct Env<'a> {
    pub now_ms: i64,
    pub policy: &'a Policy,
    pub silences: &'a [Silence],
    pub open_windows: &'a [&'a MaintenanceWindow],
}

impl Env<'_> {
    fn silenced(&self, a: &TrackedAlert) -> bool {
        self.silences.iter().any(|s| s.mutes(&a.facts, self.now_ms))
    }

    pub fn in_maintenance(&self, facts: &AlertFacts) -> bool {
        self.open_windows.iter().any(|w| w.covers(facts))
    }

    fn after_ms(&self, step: usize) -> Option<i64> {
        self.policy
            .spec
            .escalation
            .get(step)
            .map(|s| s.after_minutes * 60_000)
    }
}

impl Group {
    pub fn new(policy: &Policy, key: String, org_id: Uuid, now_ms: i64) -> Self {
        Self {
            policy_id: policy.id,
            org_id,
            key,
            next_flush_at_ms: now_ms + policy.spec.group_wait_s * 1000,
            last_sent_at_ms: None,
            escalation: None,
            alerts: BTreeMap::new(),
        }
    }

    /// The earliest time this group has something to decide: a flush, an escalation step or
    /// the end of a snooze.
    pub fn next_due(&self) -> i64 {
        let esc = self
            .escalation
            .and_then(|e| e.due_at_ms)
            .unwrap_or(i64::MAX);
        let snooze = self
            .alerts
            .values()
            .filter_map(|a| a.snoozed_until_ms)
            .min()
            .unwrap_or(i64::MAX);
        self.next_flush_at_ms.min(esc).min(snooze)
    }

    /// A new firing alert (or one firing again under a new event), snoozed until
    /// `snoozed_until_ms` if it was snoozed while pending. A change for an event the group
    /// already holds (a replay: an event fires once) only refreshes its facts.
    pub fn fire(&mut self, facts: AlertFacts, snoozed_until_ms: Option<i64>) {
        if let Some(known) = self.alerts.get_mut(&facts.event_id) {
            known.facts = facts;
            return;
        }
        self.alerts.insert(
            facts.event_id,
            TrackedAlert {
                facts,
                resolved_at_ms: None,
                acked: false,
                notified: false,
                in_maintenance: false,
                snoozed_until_ms,
            },
        );
    }

    /// The event resolved: told at the next flush if it was told firing; forgotten if it never
    /// was, or if it resolved inside a maintenance window or a snooze (nothing from inside is
    /// sent). Returns whether the group holds the event.
    pub fn resolve(&mut self, event_id: Uuid, env: &Env<'_>) -> bool {
        let Some(a) = self.alerts.get_mut(&event_id) else {
            return false;
        };
        if a.notified && !env.in_maintenance(&a.facts) && !a.snoozed(env.now_ms) {
            a.resolved_at_ms = Some(env.now_ms);
        } else {
            self.alerts.remove(&event_id);
        }
        true
    }

    /// An operator acknowledged the event; escalation stops once nothing firing is unacked.
    pub fn ack(&mut self, event_id: Uuid) -> bool {
        let Some(a) = self.alerts.get_mut(&event_id) else {
            return false;
        };
        a.acked = true;
        if self.alerts.values().all(|a| a.acked || !a.firing()) {
            self.escalation = None;
        }
        true
    }

    /// An operator snoozed the event until `until_ms` (a later snooze replaces it). Returns
    /// whether the group holds the event.
    pub fn snooze(&mut self, event_id: Uuid, until_ms: Option<i64>) -> bool {
        let Some(a) = self.alerts.get_mut(&event_id) else {
            return false;
        };
        a.snoozed_until_ms = until_ms;
        true
    }

    /// Decides everything due at `env.now_ms`; returns the messages to enqueue.
    pub fn advance(&mut self, env: &Env<'_>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        self.mute_edges(env, &mut out);
        if env.now_ms >= self.next_flush_at_ms {
            self.flush(env, &mut out);
            let interval = env.policy.spec.group_interval_s.max(1) * 1000;
            let behind = (env.now_ms - self.next_flush_at_ms) / interval + 1;
            self.next_flush_at_ms += behind * interval;
        }
        self.escalate(env, &mut out);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// Notes which alerts are inside a window now and clears snoozes that ended; those whose
    /// window or snooze just ended, still fire and are muted by nothing else are told once,
    /// in one message per cause.
    fn mute_edges(&mut self, env: &Env<'_>, out: &mut Vec<Outgoing>) {
        let mut after_window = Vec::new();
        let mut after_snooze = Vec::new();
        for a in self.alerts.values_mut() {
            let inside = env.in_maintenance(&a.facts);
            let window_ended = a.in_maintenance && !inside;
            a.in_maintenance = inside;
            let snooze_ended = a.snoozed_until_ms.is_some_and(|u| env.now_ms >= u);
            if snooze_ended {
                a.snoozed_until_ms = None;
            }
            if !a.firing() || inside || a.snoozed(env.now_ms) || env.silenced(a) {
                continue;
            }
            if window_ended {
                after_window.push(a.facts.event_id);
            } else if snooze_ended {
                after_snooze.push(a.facts.event_id);
            }
        }
        for (ended, what) in [
            (after_window, "still firing after maintenance"),
            (after_snooze, "still firing after snooze"),
        ] {
            if ended.is_empty() {
                continue;
            }
            for id in &ended {
                if let Some(a) = self.alerts.get_mut(id) {
                    a.notified = true;
                }
            }
            let mut alerts: Vec<&TrackedAlert> =
                ended.iter().filter_map(|id| self.alerts.get(id)).collect();
            by_time(&mut alerts);
            self.send(
                NotificationKind::Reminder,
                what,
                &alerts,
                &env.policy.spec.integrations,
                out,
            );
            self.last_sent_at_ms = Some(env.now_ms);
            self.start_escalation(env);
        }
    }

    fn flush(&mut self, env: &Env<'_>, out: &mut Vec<Outgoing>) {
        let mut new_firing = Vec::new();
        let mut resolved = Vec::new();
        let mut dropped = Vec::new();
        for (id, a) in &mut self.alerts {
            let muted = env.silenced(a) || a.in_maintenance || a.snoozed(env.now_ms);
            match (a.firing(), a.notified, muted) {
                (true, false, false) => new_firing.push(*id),
                (false, true, false) => resolved.push(*id),
                (false, _, _) => dropped.push(*id),
                _ => {}
            }
        }
        for id in &dropped {
            self.alerts.remove(id);
        }
        let mut sent = false;
        if !new_firing.is_empty() {
            for id in &new_firing {
                if let Some(a) = self.alerts.get_mut(id) {
                    a.notified = true;
                }
            }
            // New ones first, so the sample shows what changed.
            let mut alerts: Vec<&TrackedAlert> = new_firing
                .iter()
                .filter_map(|id| self.alerts.get(id))
                .collect();
            by_time(&mut alerts);
            let mut told: Vec<&TrackedAlert> = self
                .alerts
                .values()
                .filter(|a| {
                    a.firing()
                        && a.notified
                        && !new_firing.contains(&a.facts.event_id)
                        && !env.silenced(a)
                        && !a.in_maintenance
                        && !a.snoozed(env.now_ms)
                })
                .collect();
            by_time(&mut told);
            alerts.extend(told);
            self.send(
                NotificationKind::Firing,
                "firing",
                &alerts,
                &env.policy.spec.integrations,
                out,
            );
            sent = true;
        }
        if !resolved.is_empty() {
            let mut alerts: Vec<&TrackedAlert> = resolved
                .iter()
                .filter_map(|id| self.alerts.get(id))
                .collect();
            by_time(&mut alerts);
            self.send(
                NotificationKind::Resolved,
                "resolved",
                &alerts,
                &env.policy.spec.integrations,
                out,
            );
            for id in &resolved {
                self.alerts.remove(id);
            }
            sent = true;
        }
        let repeat_ms = env.policy.spec.repeat_interval_s * 1000;
        if !sent
            && self
                .last_sent_at_ms
                .is_some_and(|t| env.now_ms - t >= repeat_ms)
        {
            let mut alerts: Vec<&TrackedAlert> = self
                .alerts
                .values()
                .filter(|a| {
                    a.firing()
                        && a.notified
                        && !env.silenced(a)
                        && !a.in_maintenance
                        && !a.snoozed(env.now_ms)
                })
                .collect();
            by_time(&mut alerts);
            if !alerts.is_empty() {
                self.send(
                    NotificationKind::Reminder,
                    "still firing",
                    &alerts,
                    &env.policy.spec.integrations,
                    out,
                );
                sent = true;
            }
        }
        if sent {
            self.last_sent_at_ms = Some(env.now_ms);
        }
        if !new_firing.is_empty() {
            self.start_escalation(env);
        }
    }

    fn start_escalation(&mut self, env: &Env<'_>) {
        if self.escalation.is_none() && !env.policy.spec.escalation.is_empty() {
            self.escalation = Some(Escalation {
                step: 0,
                due_at_ms: env.after_ms(0).map(|d| env.now_ms + d),
            });
        }
    }

    /// Fires the due step for what is told, firing and unacked; pauses while all of that is in
    /// maintenance or snoozed, and restarts the step's delay when the window or snooze ends.
    fn escalate(&mut self, env: &Env<'_>, out: &mut Vec<Outgoing>) {
        let Some(mut esc) = self.escalation else {
            return;
        };
        let open: Vec<&TrackedAlert> = self
            .alerts
            .values()
            .filter(|a| a.firing() && a.notified && !a.acked && !env.silenced(a))
            .collect();
        if open.is_empty() {
            self.escalation = None;
            return;
        }
        let mut reachable: Vec<&TrackedAlert> = open
            .into_iter()
            .filter(|a| !a.in_maintenance && !a.snoozed(env.now_ms))
            .collect();
        by_time(&mut reachable);
        let steps = &env.policy.spec.escalation;
        match esc.due_at_ms {
            _ if esc.step >= steps.len() => {}
            None if !reachable.is_empty() => {
                esc.due_at_ms = env.after_ms(esc.step).map(|d| env.now_ms + d);
            }
            Some(due) if env.now_ms >= due && reachable.is_empty() => esc.due_at_ms = None,
            Some(due) if env.now_ms >= due => {
                let title = format!("not acknowledged (step {})", esc.step + 1);
                self.send(
                    NotificationKind::Escalation,
                    &title,
                    &reachable,
                    &steps[esc.step].integrations,
                    out,
                );
                esc.step += 1;
                esc.due_at_ms = env.after_ms(esc.step).map(|d| env.now_ms + d);
            }
            _ => {}
        }
        self.escalation = Some(esc);
    }

    /// One message about `alerts` (a sample of them and their count) to each integration.
    fn send(
        &self,
        kind: NotificationKind,
        what: &str,
        alerts: &[&TrackedAlert],
        integrations: &[Uuid],
        out: &mut Vec<Outgoing>,
    ) {
        let Some(first) = alerts.first() else {
            return;
        };
        let severity = alerts
            .iter()
            .map(|a| a.facts.severity)
            .max()
            .unwrap_or(first.facts.severity);
        let message = NotificationMessage {
            kind,
            org_id: self.org_id,
            group_key: self.key.clone(),
            title: format!(
                "[{severity}] {}: {} {what}",
                first.facts.rule_name,
                alerts.len()
            ),
            severity: severity.as_str().to_owned(),
            total: alerts.len() as u64,
            alerts: alerts
                .iter()
                .take(NotificationMessage::SAMPLE)
                .map(|a| NotificationAlert {
                    event_id: a.facts.event_id,
                    rule_name: a.facts.rule_name.clone(),
                    severity: a.facts.severity.as_str().to_owned(),
                    agent_id: a.facts.agent_id,
                    hostname: a.facts.hostname.clone(),
                    summary: a.facts.summary.clone(),
                    fired_at_ms: a.facts.fired_at_ms,
                    resolved_at_ms: a.resolved_at_ms,
                })
                .collect(),
        };
        for integration_id in integrations {
            out.push(Outgoing {
                integration_id: *integration_id,
                message: message.clone(),
            });
        }
    }
}

/// Messages list alerts oldest first (then by host), so samples are stable.
fn by_time(alerts: &mut [&TrackedAlert]) {
    alerts.sort_by(|a, b| {
        (a.facts.fired_at_ms, &a.facts.hostname).cmp(&(b.facts.fired_at_ms, &b.facts.hostname))
    });
}
