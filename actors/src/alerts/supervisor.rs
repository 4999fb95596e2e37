//! `AlertSupervisor`: one [`RuleActor`] per enabled rule, a child of the root supervisor.
//!
//! - **Rules**: all enabled rules start with it; a rule created, changed or deleted is seen
//!   from its audit event (`alert_rule.*`) and its actor started, restarted (which resumes from
//!   the persisted state) or stopped. A periodic reload (every `reload_ms`) catches changes
//!   made by another process (the CLI, another node).
//! - **Samples** come through [`AlertSamples`] and are fanned out only to rules of that metric
//!   (an index by metric), of the sample's organisation, with the agent in scope.
//! - **Fleet events** from the `EventBus`: agent online/offline (offline rules), enrolled
//!   pending and approved/rejected/revoked/deleted (approval rules, forgetting agents), job
//!   target failed/succeeded (job-failed rules), manual resolves (the rule starts over). The bus
//!   is lossy: when lagged, everything is rebuilt from the database (a reload).
//! - **Ticks** every `tick_ms` go to every rule, so `for` and holds elapse without new input.
//! - A crashed rule actor is restarted after [`RULE_RESTART_DELAY`] from its persisted state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use reap3r_store::{AlertAgent, Uuid};
use reap3r_wire::JobType;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use super::AlertSink;
use super::actor::{RuleActor, RuleArgs, RuleMsg};
use super::directory::Directory;
use super::events::RESOLVE_AUDIT_ACTION;
use super::machine::pick_value;
use super::manage::{RULE_AUDIT_PREFIX, Rule};
use super::rule::RuleKind;
use super::samples::AlertSamples;
use crate::metrics::Metric;
use crate::{Domain, FleetEvent};

/// How long a crashed rule actor waits before it is started again.
pub const RULE_RESTART_DELAY: Duration = Duration::from_secs(1);
/// Most job ids whose type is remembered (job-failed rules with a type filter).
const JOB_TYPE_CACHE: usize = 4096;

#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// How often rules are ticked (`for` and holds elapse on ticks).
    pub tick_ms: u64,
    /// How often rules and agents are reloaded from the database.
    pub reload_ms: u64,
    /// No offline or approval clock starts before this: node start + restart grace.
    pub since_floor_ms: i64,
}

/// What the root needs to start the alert supervisor.
#[derive(Clone)]
pub struct AlertingArgs {
    pub sink: Arc<dyn AlertSink>,
    pub samples: AlertSamples,
    pub settings: AlertSettings,
}

impl std::fmt::Debug for AlertingArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertingArgs")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub enum AlertSupervisorMsg {
    /// Sample batches are queued in [`AlertSamples`].
    Samples,
    Fleet(FleetEvent),
    Reload,
    Tick,
    /// Start a rule again after its actor crashed.
    Respawn(Uuid),
    /// The ids of the rules with a running actor.
    Running(RpcReplyPort<Vec<Uuid>>),
    /// Answers once every rule actor has handled what was sent to it before.
    Sync(RpcReplyPort<()>),
    /// Test hook: make a rule's actor crash.
    #[cfg(feature = "fault-injection")]
    CrashRule(Uuid),
}

struct Running {
    rule: Rule,
    actor: ActorRef<RuleMsg>,
}

pub struct AlertSupervisor;

pub struct SupervisorState {
    domain: Domain,
    args: AlertingArgs,
    directory: Directory,
    rules: HashMap<Uuid, Running>,
    by_actor: HashMap<ActorId, Uuid>,
    by_metric: HashMap<Metric, Vec<Uuid>>,
    job_types: HashMap<Uuid, Option<JobType>>,
    bus: Option<JoinHandle<()>>,
}

impl AlertSupervisor {
    /// Starts one outside the root's tree (tests; the node uses [`Self::spawn_linked`]).
    pub async fn start(
        domain: Domain,
        args: AlertingArgs,
    ) -> Result<ActorRef<AlertSupervisorMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(None, AlertSupervisor, (domain, args)).await?;
        Ok(actor)
    }

    pub async fn spawn_linked(
        domain: Domain,
        args: AlertingArgs,
        supervisor: ActorCell,
    ) -> Result<ActorRef<AlertSupervisorMsg>, ractor::SpawnErr> {
        let (actor, _) =
            Actor::spawn_linked(None, AlertSupervisor, (domain, args), supervisor).await?;
        Ok(actor)
    }
}

/// Whether the supervisor cares about a bus event (its own alert events it does not).
fn relevant(event: &FleetEvent) -> bool {
    match event {
        FleetEvent::AgentEnrolled { .. }
        | FleetEvent::AgentOnline { .. }
        | FleetEvent::AgentOffline { .. } => true,
        FleetEvent::JobUpdate {
            agent_id: Some(_),
            state,
            ..
        } => matches!(state.as_str(), "failed" | "timed_out" | "succeeded"),
        FleetEvent::Audit { action, .. } => {
            action.starts_with(RULE_AUDIT_PREFIX)
                || action == RESOLVE_AUDIT_ACTION
                || action.starts_with("agent.")
                || action.starts_with("tag.")
                || action.starts_with("folder.")
        }
        _ => false,
    }
}

fn target_id(target: Option<&str>, prefix: &str) -> Option<Uuid> {
    target?.strip_prefix(prefix)?.parse().ok()
}

impl SupervisorState {
    async fn start_rule(&mut self, myself: &ActorRef<AlertSupervisorMsg>, rule: Rule) {
        self.stop_rule(rule.id);
        let args = RuleArgs {
            rule: rule.clone(),
            domain: self.domain.clone(),
            sink: self.args.sink.clone(),
            directory: self.directory.clone(),
            since_floor: self.args.settings.since_floor_ms,
        };
        match Actor::spawn_linked(None, RuleActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), rule.id);
                let id = rule.id;
                self.rules.insert(id, Running { rule, actor });
                self.prime(id);
            }
            Err(err) => {
                error!(rule = %rule.id, %err, "rule actor did not start; trying again");
                myself.send_after(RULE_RESTART_DELAY, move || {
                    AlertSupervisorMsg::Respawn(rule.id)
                });
            }
        }
        self.index();
    }

    fn stop_rule(&mut self, id: Uuid) {
        if let Some(running) = self.rules.remove(&id) {
            self.by_actor.remove(&running.actor.get_id());
            running.actor.stop(None);
        }
        self.index();
    }

    fn index(&mut self) {
        self.by_metric.clear();
        for (id, r) in &self.rules {
            if let RuleKind::MetricThreshold(t) = &r.rule.kind
                && let Ok(metric) = t.metric()
            {
                self.by_metric.entry(metric).or_default().push(*id);
            }
        }
    }

    /// Tells a rule what the directory knows now: agents out of scope are forgotten, presence
    /// conditions are fed from the stored presence.
    fn prime(&self, id: Uuid) {
        let Some(r) = self.rules.get(&id) else { return };
        let scope = self.directory.scope_of(&r.rule);
        let _ = r
            .actor
            .cast(RuleMsg::Keep(scope.iter().map(|a| a.id).collect()));
        for a in &scope {
            if let Some((active, since)) = presence(&r.rule.kind, a) {
                let _ = r.actor.cast(RuleMsg::Condition {
                    agent: a.id,
                    active,
                    since,
                });
            }
        }
    }

    /// Tells every rule what the directory knows now of one agent: a rule whose scope it left
    /// (or that it left the fleet) forgets it; a presence rule is fed its stored presence.
    fn prime_agent(&self, agent_id: Uuid) {
        let agent = self.directory.get(agent_id);
        for r in self.rules.values() {
            let in_scope = agent
                .as_ref()
                .filter(|_| self.directory.in_scope(&r.rule, agent_id));
            match in_scope {
                None => {
                    let _ = r.actor.cast(RuleMsg::Forget(agent_id));
                }
                Some(a) => {
                    if let Some((active, since)) = presence(&r.rule.kind, a) {
                        let _ = r.actor.cast(RuleMsg::Condition {
                            agent: agent_id,
                            active,
                            since,
                        });
                    }
                }
            }
        }
    }

    async fn reload(
        &mut self,
        myself: &ActorRef<AlertSupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        self.directory
            .replace_all(self.domain.store.alert_agents(None).await?);
        let mut wanted = HashSet::new();
        for row in self.domain.store.enabled_alert_rules().await? {
            let rule = match Rule::from_row(row) {
                Ok(rule) => rule,
                Err(err) => {
                    warn!(%err, "skipping an alert rule this build cannot read");
                    continue;
                }
            };
            wanted.insert(rule.id);
            match self.rules.get(&rule.id) {
                Some(r) if r.rule == rule => self.prime(rule.id),
                _ => self.start_rule(myself, rule).await,
            }
        }
        let gone: Vec<Uuid> = self
            .rules
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.stop_rule(id);
        }
        Ok(())
    }

    /// A rule changed (or its actor crashed): start it again from the database, or stop it.
    async fn reload_rule(
        &mut self,
        myself: &ActorRef<AlertSupervisorMsg>,
        id: Uuid,
    ) -> Result<(), ActorProcessingErr> {
        match self.domain.store.alert_rule_by_id(id).await? {
            Some(row) if row.enabled => match Rule::from_row(row) {
                Ok(rule) => self.start_rule(myself, rule).await,
                Err(err) => {
                    warn!(%err, rule = %id, "alert rule unreadable; not started");
                    self.stop_rule(id);
                }
            },
            _ => self.stop_rule(id),
        }
        Ok(())
    }

    fn each_rule(&self, org_id: Uuid, agent: Uuid, mut f: impl FnMut(&Running)) {
        for r in self.rules.values() {
            if r.rule.org_id == org_id && self.directory.in_scope(&r.rule, agent) {
                f(r);
            }
        }
    }

    fn samples(&self) {
        let mut per_rule: HashMap<Uuid, Vec<(Uuid, i64, f64)>> = HashMap::new();
        for batch in self.args.samples.take() {
            for sample in batch.iter() {
                let metrics: HashSet<Metric> = sample.values.iter().map(|v| v.metric).collect();
                for metric in metrics {
                    for id in self.by_metric.get(&metric).into_iter().flatten() {
                        let Some(r) = self.rules.get(id) else {
                            continue;
                        };
                        let RuleKind::MetricThreshold(t) = &r.rule.kind else {
                            continue;
                        };
                        if r.rule.org_id != sample.org_id
                            || !self.directory.in_scope(&r.rule, sample.agent_id)
                        {
                            continue;
                        }
                        if let Some(v) =
                            pick_value(&sample.values, metric, t.label.as_deref(), t.operator)
                        {
                            per_rule.entry(*id).or_default().push((
                                sample.agent_id,
                                sample.taken_at_ms,
                                v,
                            ));
                        }
                    }
                }
            }
        }
        for (id, values) in per_rule {
            if let Some(r) = self.rules.get(&id) {
                let _ = r.actor.cast(RuleMsg::Samples(values));
            }
        }
    }

    async fn job_type(&mut self, org_id: Uuid, job_id: Uuid) -> Option<JobType> {
        if let Some(t) = self.job_types.get(&job_id) {
            return *t;
        }
        let t = match self.domain.store.job(Some(org_id), job_id).await {
            Ok(Some(job)) => job.job_type.parse().ok(),
            _ => None,
        };
        if self.job_types.len() >= JOB_TYPE_CACHE {
            self.job_types.clear();
        }
        self.job_types.insert(job_id, t);
        t
    }

    async fn fleet(
        &mut self,
        myself: &ActorRef<AlertSupervisorMsg>,
        event: FleetEvent,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.domain.now_ms();
        match event {
            FleetEvent::AgentOnline {
                agent_id, org_id, ..
            }
            | FleetEvent::AgentOffline {
                agent_id, org_id, ..
            } => {
                let online = matches!(event, FleetEvent::AgentOnline { .. });
                self.directory.set_connected(agent_id, online);
                self.each_rule(org_id, agent_id, |r| {
                    if matches!(r.rule.kind, RuleKind::AgentOffline { .. }) {
                        let _ = r.actor.cast(RuleMsg::Condition {
                            agent: agent_id,
                            active: !online,
                            since: now,
                        });
                    }
                });
            }
            FleetEvent::AgentEnrolled {
                agent_id,
                org_id,
                hostname,
                pending,
            } => {
                self.directory.upsert(AlertAgent {
                    id: agent_id,
                    org_id,
                    hostname,
                    folder_id: None,
                    tags: Vec::new(),
                    connected: false,
                    allowed: !pending,
                    pending,
                    enrolled_at: now,
                    last_seen: None,
                });
                if pending {
                    self.each_rule(org_id, agent_id, |r| {
                        if matches!(r.rule.kind, RuleKind::AgentPendingApproval { .. }) {
                            let _ = r.actor.cast(RuleMsg::Condition {
                                agent: agent_id,
                                active: true,
                                since: now,
                            });
                        }
                    });
                }
            }
            FleetEvent::JobUpdate {
                job_id,
                org_id,
                agent_id: Some(agent_id),
                state,
                ..
            } => {
                let failed = state != "succeeded";
                let job_type = self.job_type(org_id, job_id).await;
                self.each_rule(org_id, agent_id, |r| {
                    if let RuleKind::JobFailed { job_type: filter } = r.rule.kind
                        && (filter.is_none() || filter == job_type)
                    {
                        let _ = r.actor.cast(RuleMsg::Condition {
                            agent: agent_id,
                            active: failed,
                            since: now,
                        });
                    }
                });
            }
            FleetEvent::Audit {
                action,
                target,
                org_id,
                ..
            } => {
                if action.starts_with(RULE_AUDIT_PREFIX) {
                    if let Some(id) = target_id(target.as_deref(), "alert_rule:") {
                        self.reload_rule(myself, id).await?;
                    }
                } else if action == RESOLVE_AUDIT_ACTION {
                    let event_id = target_id(target.as_deref(), "alert_event:");
                    if let (Some(org), Some(id)) = (org_id, event_id)
                        && let Some(event) = self.domain.store.alert_event(org, id).await?
                        && let (Some(r), Some(agent)) =
                            (self.rules.get(&event.rule_id), event.agent_id)
                    {
                        let _ = r.actor.cast(RuleMsg::Reset(agent));
                    }
                } else if let Some(agent_id) = target_id(target.as_deref(), "agent:") {
                    // Approved, rejected, revoked, moved or deleted: re-read that agent only and
                    // tell each rule what it now means for it.
                    let org = org_id.unwrap_or_default();
                    match self.domain.store.alert_agent(org, agent_id).await? {
                        Some(a) => self.directory.upsert(a),
                        None => self.directory.remove(agent_id),
                    }
                    self.prime_agent(agent_id);
                } else {
                    // Tags and folders changed: scopes may have.
                    return self.reload(myself).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The presence condition a rule of `kind` sees for agent `a` from stored state: (active,
/// since). `None` for kinds not fed by presence.
fn presence(kind: &RuleKind, a: &AlertAgent) -> Option<(bool, i64)> {
    match kind {
        RuleKind::AgentOffline { .. } => Some((
            a.allowed && !a.connected,
            a.last_seen.unwrap_or(a.enrolled_at),
        )),
        RuleKind::AgentPendingApproval { .. } => Some((a.pending, a.enrolled_at)),
        RuleKind::MetricThreshold(_) | RuleKind::JobFailed { .. } => None,
    }
}

impl Actor for AlertSupervisor {
    type Msg = AlertSupervisorMsg;
    type State = SupervisorState;
    type Arguments = (Domain, AlertingArgs);

    async fn pre_start(
        &self,
        myself: ActorRef<AlertSupervisorMsg>,
        (domain, args): (Domain, AlertingArgs),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        // Subscribe before the first reload, so nothing between the two is missed.
        let mut rx = domain.events.subscribe();
        let me = myself.clone();
        let bus = tokio::spawn(async move {
            loop {
                let msg = match rx.recv().await {
                    Ok(event) if relevant(&event) => AlertSupervisorMsg::Fleet(event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => AlertSupervisorMsg::Reload,
                    Err(RecvError::Closed) => break,
                };
                if me.cast(msg).is_err() {
                    break;
                }
            }
        });
        let settings = &args.settings;
        myself.send_interval(Duration::from_millis(settings.tick_ms.max(1)), || {
            AlertSupervisorMsg::Tick
        });
        myself.send_interval(Duration::from_millis(settings.reload_ms.max(1)), || {
            AlertSupervisorMsg::Reload
        });
        myself.cast(AlertSupervisorMsg::Reload)?;
        args.samples.slot().set(myself.clone());
        // Batches queued while no supervisor ran are evaluated now.
        myself.cast(AlertSupervisorMsg::Samples)?;
        Ok(SupervisorState {
            domain,
            args,
            directory: Directory::default(),
            rules: HashMap::new(),
            by_actor: HashMap::new(),
            by_metric: HashMap::new(),
            job_types: HashMap::new(),
            bus: Some(bus),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AlertSupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(bus) = state.bus.take() {
            bus.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AlertSupervisorMsg>,
        msg: AlertSupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AlertSupervisorMsg::Samples => state.samples(),
            AlertSupervisorMsg::Fleet(event) => {
                if let Err(err) = state.fleet(&myself, event).await {
                    // The database hiccupped; the next reload rebuilds everything.
                    warn!(%err, "alert supervisor could not handle a fleet event");
                }
            }
            AlertSupervisorMsg::Reload => {
                if let Err(err) = state.reload(&myself).await {
                    warn!(%err, "alert rules not reloaded; trying again at the next reload");
                }
            }
            AlertSupervisorMsg::Tick => {
                for r in state.rules.values() {
                    let _ = r.actor.cast(RuleMsg::Tick);
                }
            }
            AlertSupervisorMsg::Respawn(id) => {
                if let Err(err) = state.reload_rule(&myself, id).await {
                    warn!(%err, rule = %id, "rule not restarted; trying again");
                    myself.send_after(RULE_RESTART_DELAY, move || AlertSupervisorMsg::Respawn(id));
                }
            }
            AlertSupervisorMsg::Running(reply) => {
                let mut ids: Vec<Uuid> = state.rules.keys().copied().collect();
                ids.sort();
                let _ = reply.send(ids);
            }
            AlertSupervisorMsg::Sync(reply) => {
                for r in state.rules.values() {
                    let _ = r
                        .actor
                        .call(RuleMsg::Ping, Some(Duration::from_secs(10)))
                        .await;
                }
                let _ = reply.send(());
            }
            #[cfg(feature = "fault-injection")]
            AlertSupervisorMsg::CrashRule(id) => {
                if let Some(r) = state.rules.get(&id) {
                    let _ = r.actor.cast(RuleMsg::Crash);
                }
            }
        }
        Ok(())
    }

    /// A rule actor that stops on its own (a crash, a failed write) is started again from the
    /// database; one stopped by the supervisor is already out of `by_actor`.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<AlertSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(id) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.rules.remove(&id);
        state.index();
        error!(rule = %id, %why, "rule actor stopped; restarting it from its persisted state");
        myself.send_after(RULE_RESTART_DELAY, move || AlertSupervisorMsg::Respawn(id));
        Ok(())
    }
}
