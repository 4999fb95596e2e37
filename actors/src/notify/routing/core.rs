//! The routing core: a pure state machine, `handle(now, input) -> effects`. It owns the alert
//! groups of every policy and their timers, matches silences and maintenance windows, and
//! runs escalation. Inputs are committed alert changes, timer ticks and configuration
//! reloads; effects are "enqueue this message for that integration" and "wake me at T". The
//! driver persists the groups the core marks dirty in the transaction that enqueues the
//! effects of the same call, so the database always holds what was decided with what was sent.
//!
//! Cost (an alert storm: 10,000 alerts, a group each, in one batch): a change touches only the
//! groups that hold its event (an index by event), the next wake is computed once per batch
//! ([`RoutingCore::handle_batch`]), and a tick advances only the groups that are due unless a
//! maintenance window opened or closed since the last full pass. Before, each of those was a
//! pass over every group per change, and the storm's batch took minutes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use reap3r_store::Uuid;

use super::group::{AlertFacts, Env, Group};
use super::model::{MaintenanceWindow, Policy, Silence};
use super::schedule::Compiled;
use crate::alerts::{AlertChange, AlertChangeKind};
use crate::notify::NotificationMessage;

/// What routing is configured with: every org's policies, silences and maintenance windows.
#[derive(Debug, Clone, Default)]
pub struct RoutingConfig {
    pub policies: Vec<Policy>,
    pub silences: Vec<Silence>,
    pub windows: Vec<MaintenanceWindow>,
}

/// One input of the core.
#[derive(Debug, Clone)]
pub enum Input {
    Change(AlertChange),
    /// A timer the core asked for (or any other) went off.
    Tick,
    /// Policies, silences or windows changed.
    Config(RoutingConfig),
}

/// What the driver carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Enqueue {
        /// The policy whose group decided it.
        policy_id: Uuid,
        integration_id: Uuid,
        message: NotificationMessage,
    },
    /// Call again (with [`Input::Tick`]) at this time.
    Wake(i64),
}

/// A group is named by its policy and key.
pub type GroupId = (Uuid, String);

/// A group's state to write (`Some`) or delete (`None`), from [`RoutingCore::take_dirty`].
pub type GroupWrite = (GroupId, Option<Group>);

pub struct RoutingCore {
    policies: BTreeMap<Uuid, Policy>,
    silences: Vec<Silence>,
    windows: Vec<(MaintenanceWindow, Compiled)>,
    groups: BTreeMap<GroupId, Group>,
    dirty: BTreeSet<GroupId>,
    /// The groups each event was fired into (entries of groups gone since are skipped).
    by_event: HashMap<Uuid, BTreeSet<GroupId>>,
    /// When every group was last advanced: a window edge after it needs a full pass again.
    full_pass_at: Option<i64>,
}

impl RoutingCore {
    /// A core with `config`, resuming `groups` as persisted (groups of policies that no longer
    /// exist are dropped, and reported dirty).
    pub fn new(config: RoutingConfig, groups: Vec<Group>) -> Self {
        let mut core = Self {
            policies: BTreeMap::new(),
            silences: Vec::new(),
            windows: Vec::new(),
            groups: groups
                .into_iter()
                .map(|g| ((g.policy_id, g.key.clone()), g))
                .collect(),
            dirty: BTreeSet::new(),
            by_event: HashMap::new(),
            full_pass_at: None,
        };
        for (id, group) in &core.groups {
            for event in group.alerts.keys() {
                core.by_event.entry(*event).or_default().insert(id.clone());
            }
        }
        core.configure(config);
        core
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Handles one input at `now_ms`; the last effect is the next wake, if anything is pending.
    pub fn handle(&mut self, now_ms: i64, input: Input) -> Vec<Effect> {
        self.handle_batch(now_ms, [input])
    }

    /// Handles `inputs` in order at `now_ms`; the last effect is the next wake, computed once.
    pub fn handle_batch(
        &mut self,
        now_ms: i64,
        inputs: impl IntoIterator<Item = Input>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for input in inputs {
            match input {
                Input::Change(change) => self.change(now_ms, change, &mut effects),
                Input::Tick => {
                    let full = self.window_edge_passed(now_ms);
                    self.advance_all(now_ms, full, &mut effects);
                }
                Input::Config(config) => {
                    self.configure(config);
                    self.advance_all(now_ms, true, &mut effects);
                }
            }
        }
        if let Some(at) = self.next_wake(now_ms) {
            effects.push(Effect::Wake(at));
        }
        effects
    }

    /// Whether a maintenance window opened or closed since the last full pass (every group
    /// must then note which of its alerts are inside).
    fn window_edge_passed(&self, now_ms: i64) -> bool {
        let Some(since) = self.full_pass_at else {
            return true;
        };
        self.windows
            .iter()
            .any(|(_, c)| c.next_edge_after(since).is_some_and(|edge| edge <= now_ms))
    }

    /// The groups changed since the last call, to persist with the effects handed out since.
    pub fn take_dirty(&mut self) -> Vec<GroupWrite> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|id| {
                let group = self.groups.get(&id).cloned();
                (id, group)
            })
            .collect()
    }

    /// When something is next due: a group's flush, escalation or snooze end, or a window's
    /// edge.
    pub fn next_wake(&self, now_ms: i64) -> Option<i64> {
        let groups = self.groups.values().map(Group::next_due);
        let windows = self
            .windows
            .iter()
            .filter_map(|(_, c)| c.next_edge_after(now_ms));
        groups.chain(windows).filter(|t| *t < i64::MAX).min()
    }

    fn configure(&mut self, config: RoutingConfig) {
        self.policies = config
            .policies
            .into_iter()
            .filter(|p| p.spec.enabled)
            .map(|p| (p.id, p))
            .collect();
        self.silences = config.silences;
        // Specs are validated when written; one that no longer compiles is left out.
        self.windows = config
            .windows
            .into_iter()
            .filter_map(|w| w.spec.schedule.compile().ok().map(|c| (w, c)))
            .collect();
        let gone: Vec<GroupId> = self
            .groups
            .keys()
            .filter(|(policy, _)| !self.policies.contains_key(policy))
            .cloned()
            .collect();
        for id in gone {
            if let Some(group) = self.groups.remove(&id) {
                for event in group.alerts.keys() {
                    self.forget_event_group(*event, &id);
                }
            }
            self.dirty.insert(id);
        }
    }

    fn forget_event_group(&mut self, event: Uuid, id: &GroupId) {
        if let Some(ids) = self.by_event.get_mut(&event) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_event.remove(&event);
            }
        }
    }

    /// The windows open at `now_ms` (copied: there are few, and the groups are then borrowed
    /// mutably beside them).
    fn open_windows(&self, now_ms: i64) -> Vec<MaintenanceWindow> {
        self.windows
            .iter()
            .filter(|(_, c)| c.open_at(now_ms).is_some())
            .map(|(w, _)| w.clone())
            .collect()
    }

    fn change(&mut self, now_ms: i64, change: AlertChange, effects: &mut Vec<Effect>) {
        let facts = AlertFacts::from(&change);
        let open_owned = self.open_windows(now_ms);
        let open: Vec<&MaintenanceWindow> = open_owned.iter().collect();
        let mut touched = Vec::new();
        match change.kind {
            AlertChangeKind::Fired => {
                for policy in self.policies.values().filter(|p| p.matches(&facts)) {
                    let id = (policy.id, policy.group_key(&facts));
                    let group = self
                        .groups
                        .entry(id.clone())
                        .or_insert_with(|| Group::new(policy, id.1.clone(), facts.org_id, now_ms));
                    // A snooze that already ended is no snooze: the alert is simply new.
                    group.fire(
                        facts.clone(),
                        change.snoozed_until_ms.filter(|until| *until > now_ms),
                    );
                    self.by_event
                        .entry(facts.event_id)
                        .or_default()
                        .insert(id.clone());
                    touched.push(id);
                }
            }
            AlertChangeKind::Resolved | AlertChangeKind::Acked | AlertChangeKind::Snoozed => {
                let holding = if change.kind == AlertChangeKind::Resolved {
                    self.by_event.remove(&change.event_id)
                } else {
                    self.by_event.get(&change.event_id).cloned()
                };
                for id in holding.into_iter().flatten() {
                    let (Some(group), Some(policy)) =
                        (self.groups.get_mut(&id), self.policies.get(&id.0))
                    else {
                        continue;
                    };
                    let env = Env {
                        now_ms,
                        policy,
                        silences: &self.silences,
                        open_windows: &open,
                    };
                    let held = match change.kind {
                        AlertChangeKind::Resolved => group.resolve(change.event_id, &env),
                        AlertChangeKind::Acked => group.ack(change.event_id),
                        _ => group.snooze(change.event_id, change.snoozed_until_ms),
                    };
                    if held {
                        touched.push(id);
                    }
                }
            }
        }
        // Only a touched group whose time has come decides now; the others wait for their
        // timers, so a burst of changes costs one look at each group, not one per alert.
        for id in touched {
            if self.groups.get(&id).is_some_and(|g| g.next_due() <= now_ms) {
                self.advance(now_ms, &id, &open, effects);
            } else if self.groups.get(&id).is_some_and(Group::is_empty) {
                self.groups.remove(&id);
            }
            self.dirty.insert(id);
        }
    }

    /// Advances every group (`full`), or only those whose own time has come.
    fn advance_all(&mut self, now_ms: i64, full: bool, effects: &mut Vec<Effect>) {
        let open_owned = self.open_windows(now_ms);
        let open: Vec<&MaintenanceWindow> = open_owned.iter().collect();
        let ids: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| full || g.next_due() <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.advance(now_ms, &id, &open, effects);
        }
        if full {
            self.full_pass_at = Some(now_ms);
        }
    }

    /// Lets one group decide; marks it dirty only if its state changed.
    fn advance(
        &mut self,
        now_ms: i64,
        id: &GroupId,
        open: &[&MaintenanceWindow],
        effects: &mut Vec<Effect>,
    ) {
        let (Some(group), Some(policy)) = (self.groups.get_mut(id), self.policies.get(&id.0))
        else {
            return;
        };
        let before = group.clone();
        let env = Env {
            now_ms,
            policy,
            silences: &self.silences,
            open_windows: open,
        };
        for out in group.advance(&env) {
            effects.push(Effect::Enqueue {
                policy_id: id.0,
                integration_id: out.integration_id,
                message: out.message,
            });
        }
        if group.is_empty() {
            self.groups.remove(id);
            self.dirty.insert(id.clone());
        } else if *group != before {
            self.dirty.insert(id.clone());
        }
    }
}
