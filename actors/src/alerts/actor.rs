//! `RuleActor`, one per enabled rule, the thin driver of its [`RuleMachine`]: messages →
//! inputs, effects → one transaction each (event row, its history entry and the rule's
//! persisted state for the agent), then, once committed, the change handed to routing and
//! announced. A failed write stops the actor with an error; the supervisor restarts it and it
//! resumes from what was committed.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use reap3r_store::{AlertRuleState, NewAlertEvent, SYSTEM_ACTOR, Uuid};

use super::directory::Directory;
use super::machine::{Effect, Input, MachineConfig, Persisted, Phase, RuleMachine};
use super::manage::Rule;
use super::publish::{AgentFacts, announce};
use super::rule::RuleKind;
use super::{AlertChangeKind, AlertSink};
use crate::Domain;

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
    Tick,
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

pub struct RuleState {
    args: RuleArgs,
    machine: RuleMachine,
    events: HashMap<Uuid, Uuid>,
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
        let domain = &self.args.domain;
        let rule = &self.args.rule;
        for effect in effects {
            let agent = effect.agent();
            let now = domain.now_ms();
            let mut tx = domain.begin().await?;
            let mut announced = None;
            match effect {
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
                    announced = tx
                        .fire_alert_event(event_id, &summary(&rule.kind, value), value, now)
                        .await?
                        .map(|e| (e, AlertChangeKind::Fired));
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
                        announced = resolved
                            .filter(|_| fired)
                            .map(|e| (e, AlertChangeKind::Resolved));
                    }
                }
            }
            let persisted = self.machine.persisted(agent);
            let row = self.events.get(&agent).and_then(|event_id| {
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
                    event_id: *event_id,
                })
            });
            tx.put_alert_rule_state(rule.id, agent, row.as_ref(), now)
                .await?;
            domain.commit(tx).await?;
            if let Some((event, kind)) = announced {
                let facts = self
                    .args
                    .directory
                    .get(agent)
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
        }
        Ok(())
    }

    async fn feed(&mut self, input: Input) -> Result<(), ActorProcessingErr> {
        let now = self.args.domain.now_ms();
        let effects = self.machine.handle(now, input);
        self.apply(effects).await
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
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RuleMsg>,
        msg: RuleMsg,
        state: &mut RuleState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RuleMsg::Samples(values) => {
                for (agent, at, value) in values {
                    state.feed(Input::Sample { agent, at, value }).await?;
                }
            }
            RuleMsg::Condition {
                agent,
                active,
                since,
            } => {
                state
                    .feed(Input::Condition {
                        agent,
                        active,
                        since,
                    })
                    .await?
            }
            RuleMsg::Reset(agent) => {
                state.events.remove(&agent);
                state.feed(Input::Reset { agent }).await?;
            }
            RuleMsg::Keep(agents) => {
                let keep: std::collections::HashSet<Uuid> = agents.into_iter().collect();
                let gone: Vec<Uuid> = state
                    .machine
                    .active_agents()
                    .filter(|a| !keep.contains(a))
                    .collect();
                for agent in gone {
                    state.feed(Input::Forget { agent }).await?;
                }
            }
            RuleMsg::Forget(agent) => state.feed(Input::Forget { agent }).await?,
            RuleMsg::Tick => state.feed(Input::Tick).await?,
            RuleMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            #[cfg(feature = "fault-injection")]
            RuleMsg::Crash => return Err("injected fault".into()),
        }
        Ok(())
    }
}
