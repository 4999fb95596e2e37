//! `RuleActor`, one per enabled rule, the thin driver of its [`RuleMachine`]: messages →
//! inputs, a message's effects → one transaction per [`MAX_EFFECTS_PER_TX`] (event rows, their
//! history entries and the rule's persisted state per agent), then, once committed, the changes
//! handed to routing and announced. One timer is armed at the machine's next wake, so a `for`
//! fires when it elapses, not at the next periodic tick. A failed write stops the actor with an
//! error; the supervisor restarts it and it resumes from what was committed.
//!
//! Why batches: an alert storm (10,000 agents crossing at once) was one transaction per effect,
//! 20,000 commits in one rule's mailbox, and the alerts of quieter agents waited behind them.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use reap3r_store::{AlertRuleState, NewAlertEvent, SYSTEM_ACTOR, Uuid};
use tokio::task::JoinHandle;

use super::directory::Directory;
use super::machine::{Effect, Input, MachineConfig, Persisted, Phase, RuleMachine};
use super::manage::Rule;
use super::publish::{AgentFacts, announce};
use super::rule::RuleKind;
use super::{AlertChangeKind, AlertSink};
use crate::Domain;

/// Most effects written in one transaction: a storm's batch commits in pieces, so the database's
/// writer is not held for one huge transaction while samples wait to be stored.
pub const MAX_EFFECTS_PER_TX: usize = 500;

#[derive(Debug)]
pub enum RuleMsg {
    /// Values for a threshold rule: (agent, taken at, value), already matched to the scope.
    Samples(Vec<(Uuid, i64, f64)>),
    /// A presence or job condition of one agent.
    Condition {
        agent: Uuid,
        active: bool,
        since: i64,
    },
    /// An operator resolved the agent's event by hand.
    Reset(Uuid),
    /// The agents now in scope: an alert of any other agent ends (it left the scope or the
    /// fleet).
    Keep(Vec<Uuid>),
    /// One agent left the scope or the fleet: its alert ends.
    Forget(Uuid),
    /// The supervisor's periodic tick: a backstop for clocks that jump (a wall clock stepped
    /// forward, a test's manual clock), which the armed timer, on monotonic time, does not see.
    Tick,
    /// The armed timer: the machine's next wake is due.
    Wake,
    /// Answers once everything sent before it is handled (tests, shutdown).
    Ping(RpcReplyPort<()>),
    /// Test hook: fail, to exercise the restart from persisted state.
    #[cfg(feature = "fault-injection")]
    Crash,
}

pub struct RuleArgs {
    pub rule: Rule,
    pub domain: Domain,
    pub sink: Arc<dyn AlertSink>,
    pub directory: Directory,
    /// No presence condition is pending from before this (node start + restart grace).
    pub since_floor: i64,
}

pub struct RuleActor;

/// A `send_after` of [`RuleMsg::Wake`].
type Timer = JoinHandle<Result<(), MessagingErr<RuleMsg>>>;

pub struct RuleState {
    args: RuleArgs,
    machine: RuleMachine,
    events: HashMap<Uuid, Uuid>,
    /// The armed timer and the wake it is for.
    timer: Option<(i64, Timer)>,
}

fn phase_of(s: &AlertRuleState) -> Phase {
    match (s.phase.as_str(), s.fired_at) {
        ("firing", Some(fired_at)) => Phase::Firing {
            since: s.since,
            fired_at,
        },
        _ => Phase::Pending { since: s.since },
    }
}

/// One line for humans, as in the event's summary.
fn summary(kind: &RuleKind, value: Option<f64>) -> String {
    match kind {
        RuleKind::MetricThreshold(t) => {
            let label = t
                .label
                .as_deref()
                .map(|l| format!("[{l}]"))
                .unwrap_or_default();
            let value = value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
            format!(
                "{}{label} {} {}s {value} {} {}",
                t.metric,
                t.aggregation.as_str(),
                t.window_s,
                t.operator.as_str(),
                t.value
            )
        }
        RuleKind::AgentOffline { for_s } => format!("agent offline for at least {for_s}s"),
        RuleKind::JobFailed { job_type: Some(t) } => format!("a {t} job failed"),
        RuleKind::JobFailed { job_type: None } => "a job failed".to_owned(),
        RuleKind::AgentPendingApproval { for_s } => {
            format!("agent waiting for approval for at least {for_s}s")
        }
    }
}

impl RuleState {
    async fn apply(&mut self, effects: Vec<Effect>) -> Result<(), ActorProcessingErr> {
        for chunk in effects.chunks(MAX_EFFECTS_PER_TX) {
            self.apply_chunk(chunk).await?;
        }
        Ok(())
    }

    /// One transaction for `effects`; what they announce is announced once it commits.
    async fn apply_chunk(&mut self, effects: &[Effect]) -> Result<(), ActorProcessingErr> {
        let domain = &self.args.domain;
        let rule = &self.args.rule;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let mut announced = Vec::new();
        for effect in effects {
            let agent = effect.agent();
            match *effect {
                Effect::Pending { since, value, .. } => {
                    let event = tx
                        .open_alert_event(
                            &NewAlertEvent {
                                org_id: rule.org_id,
                                rule_id: rule.id,
                                rule_name: rule.name.clone(),
                                agent_id: Some(agent),
                                severity: rule.severity.as_str().to_owned(),
                                summary: summary(&rule.kind, value),
                                value,
                                pending_at: since.min(now),
                            },
                            now,
                        )
                        .await?;
                    self.events.insert(agent, event.id);
                }
                Effect::Fired { value, .. } => {
                    let event_id = match self.events.get(&agent) {
                        Some(id) => *id,
                        None => return Err("firing without an open event".into()),
                    };
                    if let Some(e) = tx
                        .fire_alert_event(event_id, &summary(&rule.kind, value), value, now)
                        .await?
                    {
                        announced.push((e, AlertChangeKind::Fired));
                    }
                }
                Effect::Resolved { .. } | Effect::Cleared { .. } => {
                    if let Some(event_id) = self.events.remove(&agent) {
                        let fired = matches!(effect, Effect::Resolved { .. });
                        let detail = if fired {
                            "condition cleared"
                        } else {
                            "cleared before firing"
                        };
                        let resolved = tx
                            .resolve_alert_event(None, event_id, SYSTEM_ACTOR, Some(detail), now)
                            .await?;
                        if let Some(e) = resolved.filter(|_| fired) {
                            announced.push((e, AlertChangeKind::Resolved));
                        }
                    }
                }
            }
            // The machine is already past the whole batch: each agent's row is its final state
            // (written again, unchanged, when the batch holds several of its effects).
            let row = self.state_row(agent);
            tx.put_alert_rule_state(rule.id, agent, row.as_ref(), now)
                .await?;
        }
        domain.commit(tx).await?;
        for (event, kind) in announced {
            let facts = event
                .agent_id
                .and_then(|a| self.args.directory.get(a))
                .map(|a| AgentFacts::from(&a))
                .unwrap_or_default();
            announce(
                domain,
                &*self.args.sink,
                &event,
                kind,
                facts,
                SYSTEM_ACTOR,
                now,
            );
        }
        Ok(())
    }

    /// The rule's persisted state for `agent` as the machine holds it now; `None` once inactive.
    fn state_row(&self, agent: Uuid) -> Option<AlertRuleState> {
        let persisted = self.machine.persisted(agent);
        let event_id = *self.events.get(&agent)?;
        let (phase, since, fired_at) = match persisted.phase {
            Phase::Inactive => return None,
            Phase::Pending { since } => ("pending", since, None),
            Phase::Firing { since, fired_at } => ("firing", since, Some(fired_at)),
        };
        Some(AlertRuleState {
            agent_id: agent,
            phase: phase.to_owned(),
            since,
            fired_at,
            last_value: persisted.last_value,
            event_id,
        })
    }

    /// Feeds `inputs` to the machine and writes all their effects.
    async fn feed(
        &mut self,
        inputs: impl IntoIterator<Item = Input>,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.args.domain.now_ms();
        let mut effects = Vec::new();
        for input in inputs {
            effects.extend(self.machine.handle(now, input));
        }
        self.apply(effects).await
    }

    /// Arms the timer for the machine's next wake unless one is armed for it or earlier.
    fn arm(&mut self, myself: &ActorRef<RuleMsg>) {
        let Some(at) = self.machine.next_wake() else {
            return;
        };
        if self.timer.as_ref().is_some_and(|(armed, _)| *armed <= at) {
            return;
        }
        if let Some((_, old)) = self.timer.take() {
            old.abort();
        }
        let delay = u64::try_from(at - self.args.domain.now_ms()).unwrap_or(0);
        let handle = myself.send_after(Duration::from_millis(delay), || RuleMsg::Wake);
        self.timer = Some((at, handle));
    }
}

impl Actor for RuleActor {
    type Msg = RuleMsg;
    type State = RuleState;
    type Arguments = RuleArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RuleMsg>,
        args: RuleArgs,
    ) -> Result<RuleState, ActorProcessingErr> {
        let states = args.domain.store.alert_rule_states(args.rule.id).await?;
        let events = states.iter().map(|s| (s.agent_id, s.event_id)).collect();
        let config = MachineConfig::for_kind(&args.rule.kind, args.since_floor);
        let machine = RuleMachine::resume(
            config,
            states.iter().map(|s| {
                (
                    s.agent_id,
                    Persisted {
                        phase: phase_of(s),
                        last_value: s.last_value,
                    },
                )
            }),
        );
        Ok(RuleState {
            args,
            machine,
            events,
            timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RuleMsg>,
        state: &mut RuleState,
    ) -> Result<(), ActorProcessingErr> {
        // A resumed pending `for` fires on time even if no input comes.
        state.arm(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RuleMsg>,
        state: &mut RuleState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, timer)) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RuleMsg>,
        msg: RuleMsg,
        state: &mut RuleState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RuleMsg::Samples(values) => {
                let inputs =
                    values
                        .into_iter()
                        .map(|(agent, at, value)| Input::Sample { agent, at, value });
                state.feed(inputs).await?;
            }
            RuleMsg::Condition {
                agent,
                active,
                since,
            } => {
                state
                    .feed([Input::Condition {
                        agent,
                        active,
                        since,
                    }])
                    .await?
            }
            RuleMsg::Reset(agent) => {
                state.events.remove(&agent);
                state.feed([Input::Reset { agent }]).await?;
            }
            RuleMsg::Keep(agents) => {
                let keep: std::collections::HashSet<Uuid> = agents.into_iter().collect();
                let gone: Vec<Uuid> = state
                    .machine
                    .active_agents()
                    .filter(|a| !keep.contains(a))
                    .collect();
                state
                    .feed(gone.into_iter().map(|agent| Input::Forget { agent }))
                    .await?;
            }
            RuleMsg::Forget(agent) => state.feed([Input::Forget { agent }]).await?,
            RuleMsg::Tick => state.feed([Input::Tick]).await?,
            RuleMsg::Wake => {
                state.timer = None;
                state.feed([Input::Tick]).await?;
            }
            RuleMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            #[cfg(feature = "fault-injection")]
            RuleMsg::Crash => return Err("injected fault".into()),
        }
        state.arm(&myself);
        Ok(())
    }
}
