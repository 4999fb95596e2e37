//! **`RuleMachine`, pure and I/O-free**: one rule's alert state per agent, driven as
//! `handle(now, input) -> effects`. Per agent: inactive → pending (since) → firing (since) →
//! resolved (back to inactive), with
//! - `for`: the condition must hold from `since` for `for_ms` before the alert fires (checked on
//!   every input and on ticks, so a pending alert fires on time without a new sample). A
//!   threshold condition holds from when its sample was *taken*, not from when the server got
//!   round to it (at most [`MAX_SAMPLE_LAG_MS`] earlier): the flush and the queue in between are
//!   not part of the operator's `for` (measured: they were 0.9 s at p50 and 3.2 s at p99 of the
//!   alert latency at 1,000 samples/s, docs/BENCHMARKS.md "Alerting");
//! - timers: every pending `for` and firing hold is a deadline; [`RuleMachine::next_wake`] is
//!   the earliest, so the driver sets one timer for it and a tick looks only at what is due;
//! - hysteresis (threshold rules): a firing alert clears only once the value is past the
//!   recovery line, not at the alert line;
//! - firing hold: a firing alert does not resolve before `fired_at + hold_ms`, so a value
//!   oscillating at the line sends one fire, not fire/resolve pairs;
//! - a floor under `since` for presence conditions (offline, waiting for approval): the node's
//!   own downtime is not the agent's, so after a start nothing is pending from before
//!   `node start + restart grace` (set by the driver in [`MachineConfig::since_floor`]);
//! - resume: the driver rebuilds the machine from persisted phases, so a restart neither loses a
//!   pending `for` nor fires a firing alert again.
//!
//! Threshold rules aggregate each agent's samples over a bounded [`Window`]. The other kinds
//! feed a condition (active since / inactive) directly.

mod window;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};

use reap3r_store::Uuid;

use crate::alerts::rule::{Aggregation, Operator, RuleKind};
use crate::metrics::{Metric, SeriesValue};
pub use window::{MAX_WINDOW_SAMPLES, Window};

/// How long before its evaluation a sample may have been taken and still start a condition at
/// its `taken_at`; an older one (an agent clock behind, a backlog) starts it this long before
/// now, so a skewed clock shortens a `for` by no more than this.
pub const MAX_SAMPLE_LAG_MS: i64 = 10_000;

/// How a machine turns its inputs into "breaching or not".
#[derive(Debug, Clone, PartialEq)]
pub enum Eval {
    Threshold {
        operator: Operator,
        value: f64,
        recovery: Option<f64>,
        aggregation: Aggregation,
        window_ms: i64,
    },
    /// The driver says directly whether the condition holds ([`Input::Condition`]).
    Condition,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    pub for_ms: i64,
    pub hold_ms: i64,
    pub eval: Eval,
    /// No condition is pending from earlier than this (restart grace for presence kinds).
    pub since_floor: i64,
}

impl MachineConfig {
    /// The machine's configuration for a rule kind; `since_floor` applies to presence kinds only.
    pub fn for_kind(kind: &RuleKind, since_floor: i64) -> Self {
        let (eval, floor) = match kind {
            RuleKind::MetricThreshold(t) => (
                Eval::Threshold {
                    operator: t.operator,
                    value: t.value,
                    recovery: t.recovery,
                    aggregation: t.aggregation,
                    window_ms: i64::from(t.window_s) * 1000,
                },
                0,
            ),
            RuleKind::AgentOffline { .. } | RuleKind::AgentPendingApproval { .. } => {
                (Eval::Condition, since_floor)
            }
            RuleKind::JobFailed { .. } => (Eval::Condition, 0),
        };
        Self {
            for_ms: kind.for_ms(),
            hold_ms: kind.hold_ms(),
            eval,
            since_floor: floor,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Inactive,
    Pending { since: i64 },
    Firing { since: i64, fired_at: i64 },
}

/// What the driver persists per (rule, agent) and resumes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Persisted {
    pub phase: Phase,
    pub last_value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
struct AgentState {
    phase: Phase,
    /// The last evaluation's outcome (a firing alert held by `hold_ms` may already be clear).
    breaching: bool,
    last_value: Option<f64>,
    window: Window,
    /// After a manual resolve: the condition counts only from then on.
    not_before: i64,
    /// This agent's entry in [`RuleMachine::timers`], if it has one.
    timer: Option<i64>,
}

impl AgentState {
    fn new() -> Self {
        Self {
            phase: Phase::Inactive,
            breaching: false,
            last_value: None,
            window: Window::default(),
            not_before: i64::MIN,
            timer: None,
        }
    }

    /// When this state next changes without input: its `for` elapses or its hold ends.
    fn deadline(&self, config: &MachineConfig) -> Option<i64> {
        match self.phase {
            Phase::Pending { since } if self.breaching => Some(since.saturating_add(config.for_ms)),
            Phase::Firing { fired_at, .. } if !self.breaching => {
                Some(fired_at.saturating_add(config.hold_ms))
            }
            _ => None,
        }
    }
}

/// Takes `agent`'s entry out of `timers`.
fn disarm(timers: &mut BTreeSet<(i64, Uuid)>, agent: Uuid, state: &mut AgentState) {
    if let Some(old) = state.timer.take() {
        timers.remove(&(old, agent));
    }
}

/// Puts `agent`'s entry in `timers` where its state's deadline now is.
fn rearm(
    timers: &mut BTreeSet<(i64, Uuid)>,
    config: &MachineConfig,
    agent: Uuid,
    state: &mut AgentState,
) {
    let due = state.deadline(config);
    if due == state.timer {
        return;
    }
    disarm(timers, agent, state);
    if let Some(at) = due {
        timers.insert((at, agent));
    }
    state.timer = due;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One value for a threshold rule, taken at `at` (already picked from the agent's sample).
    Sample {
        agent: Uuid,
        at: i64,
        value: f64,
    },
    /// A presence or job condition: active since `since`, or no longer active.
    Condition {
        agent: Uuid,
        active: bool,
        since: i64,
    },
    /// An operator resolved the agent's alert by hand (the event is already written): start
    /// again from inactive; a condition counts only from now.
    Reset {
        agent: Uuid,
    },
    /// The agent left the rule's scope or was deleted: its alert ends.
    Forget {
        agent: Uuid,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The condition started holding: an event opens in `pending`.
    Pending {
        agent: Uuid,
        since: i64,
        value: Option<f64>,
    },
    /// `for` elapsed: the event fires.
    Fired {
        agent: Uuid,
        since: i64,
        value: Option<f64>,
    },
    /// A firing alert cleared (after its hold).
    Resolved { agent: Uuid, value: Option<f64> },
    /// A pending alert cleared before it fired.
    Cleared { agent: Uuid, value: Option<f64> },
}

impl Effect {
    pub fn agent(&self) -> Uuid {
        match self {
            Effect::Pending { agent, .. }
            | Effect::Fired { agent, .. }
            | Effect::Resolved { agent, .. }
            | Effect::Cleared { agent, .. } => *agent,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuleMachine {
    config: MachineConfig,
    agents: HashMap<Uuid, AgentState>,
    /// Every agent's deadline, earliest first (see [`AgentState::deadline`]).
    timers: BTreeSet<(i64, Uuid)>,
}

impl RuleMachine {
    pub fn new(config: MachineConfig) -> Self {
        Self {
            config,
            agents: HashMap::new(),
            timers: BTreeSet::new(),
        }
    }

    /// When the earliest pending `for` or firing hold falls due: the driver ticks then.
    pub fn next_wake(&self) -> Option<i64> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Rebuilds a machine from persisted states. A resumed presence condition stays pending
    /// from no earlier than the floor; a firing alert stays firing and is not fired again.
    pub fn resume(
        config: MachineConfig,
        states: impl IntoIterator<Item = (Uuid, Persisted)>,
    ) -> Self {
        let mut m = Self::new(config);
        for (agent, p) in states {
            let phase = match p.phase {
                Phase::Pending { since } => Phase::Pending {
                    since: since.max(m.config.since_floor),
                },
                other => other,
            };
            let mut s = AgentState::new();
            s.breaching = phase != Phase::Inactive;
            s.phase = phase;
            s.last_value = p.last_value;
            rearm(&mut m.timers, &m.config, agent, &mut s);
            m.agents.insert(agent, s);
        }
        m
    }

    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// What to persist for `agent` after an effect.
    pub fn persisted(&self, agent: Uuid) -> Persisted {
        self.agents.get(&agent).map_or(
            Persisted {
                phase: Phase::Inactive,
                last_value: None,
            },
            |s| Persisted {
                phase: s.phase,
                last_value: s.last_value,
            },
        )
    }

    /// Agents whose alert is pending or firing.
    pub fn active_agents(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.agents
            .iter()
            .filter(|(_, s)| s.phase != Phase::Inactive)
            .map(|(a, _)| *a)
    }

    pub fn handle(&mut self, now: i64, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Sample { agent, at, value } => self.sample(now, agent, at, value, &mut out),
            Input::Condition {
                agent,
                active,
                since,
            } => {
                let floor = self.config.since_floor;
                let state = self.agents.entry(agent).or_insert_with(AgentState::new);
                let since = since.max(floor).max(state.not_before);
                self.step(now, agent, active, since, None, &mut out);
            }
            Input::Reset { agent } => {
                let state = self.agents.entry(agent).or_insert_with(AgentState::new);
                disarm(&mut self.timers, agent, state);
                *state = AgentState::new();
                state.not_before = now;
            }
            Input::Forget { agent } => {
                if let Some(mut state) = self.agents.remove(&agent) {
                    disarm(&mut self.timers, agent, &mut state);
                    match state.phase {
                        Phase::Inactive => {}
                        Phase::Pending { .. } => out.push(Effect::Cleared {
                            agent,
                            value: state.last_value,
                        }),
                        Phase::Firing { .. } => out.push(Effect::Resolved {
                            agent,
                            value: state.last_value,
                        }),
                    }
                }
            }
            Input::Tick => {
                while let Some(&(at, agent)) = self.timers.first() {
                    if at > now {
                        break;
                    }
                    self.timers.pop_first();
                    if let Some(state) = self.agents.get_mut(&agent) {
                        state.timer = None;
                    }
                    self.check_timers(now, agent, &mut out);
                }
            }
        }
        out
    }

    fn sample(&mut self, now: i64, agent: Uuid, at: i64, value: f64, out: &mut Vec<Effect>) {
        let Eval::Threshold {
            operator,
            value: line,
            recovery,
            aggregation,
            window_ms,
        } = self.config.eval
        else {
            return;
        };
        if at <= now - window_ms {
            // A stale sample (replayed after an outage) says nothing about now.
            return;
        }
        let state = self.agents.entry(agent).or_insert_with(AgentState::new);
        state.window.push(at, value, window_ms);
        let Some(agg) = state.window.value(aggregation) else {
            return;
        };
        state.last_value = Some(agg);
        let breaching = match state.phase {
            Phase::Firing { .. } => operator.holds(agg, recovery.unwrap_or(line)),
            _ => operator.holds(agg, line),
        };
        let since = at
            .clamp(now.saturating_sub(MAX_SAMPLE_LAG_MS), now)
            .max(state.not_before);
        self.step(now, agent, breaching, since, Some(agg), out);
    }

    /// The shared transition: the condition holds (or not) now, having started at `since`.
    fn step(
        &mut self,
        now: i64,
        agent: Uuid,
        breaching: bool,
        since: i64,
        value: Option<f64>,
        out: &mut Vec<Effect>,
    ) {
        let Some(state) = self.agents.get_mut(&agent) else {
            return;
        };
        state.breaching = breaching;
        let value = value.or(state.last_value);
        match (state.phase, breaching) {
            (Phase::Inactive, true) => {
                state.phase = Phase::Pending { since };
                out.push(Effect::Pending {
                    agent,
                    since,
                    value,
                });
            }
            (Phase::Pending { .. }, false) => {
                state.phase = Phase::Inactive;
                out.push(Effect::Cleared { agent, value });
            }
            (Phase::Inactive, false)
            | (Phase::Pending { .. }, true)
            | (Phase::Firing { .. }, _) => {}
        }
        self.check_timers(now, agent, out);
    }

    /// `for` elapsed → fire; clear past the hold → resolve; then the agent's timer is moved to
    /// its next deadline.
    fn check_timers(&mut self, now: i64, agent: Uuid, out: &mut Vec<Effect>) {
        let Some(state) = self.agents.get_mut(&agent) else {
            return;
        };
        let (for_ms, hold_ms) = (self.config.for_ms, self.config.hold_ms);
        match state.phase {
            Phase::Pending { since } if state.breaching && now >= since.saturating_add(for_ms) => {
                state.phase = Phase::Firing {
                    since,
                    fired_at: now,
                };
                out.push(Effect::Fired {
                    agent,
                    since,
                    value: state.last_value,
                });
            }
            Phase::Firing { fired_at, .. }
                if !state.breaching && now >= fired_at.saturating_add(hold_ms) =>
            {
                state.phase = Phase::Inactive;
                out.push(Effect::Resolved {
                    agent,
                    value: state.last_value,
                });
            }
            _ => {}
        }
        rearm(&mut self.timers, &self.config, agent, state);
    }
}

/// The value a threshold rule sees in one agent's sample: the series with `label`, or (no
/// label) the worst series of the metric for the operator — the highest for `>`/`>=`, the
/// lowest for `<`/`<=`. `None` if the sample has no such series.
pub fn pick_value(
    values: &[SeriesValue],
    metric: Metric,
    label: Option<&str>,
    operator: Operator,
) -> Option<f64> {
    let series = values
        .iter()
        .filter(|v| v.metric == metric && label.is_none_or(|l| v.label == l))
        .map(|v| v.value)
        .filter(|v| v.is_finite());
    match operator {
        Operator::Gt | Operator::Ge => series.reduce(f64::max),
        Operator::Lt | Operator::Le => series.reduce(f64::min),
    }
}
