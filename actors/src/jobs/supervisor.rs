//! Supervises job actors: starts one per active job (at creation, and for every active job when
//! the node starts), routes agent messages to them, and restarts a crashed one from the database.
//! A finished job actor retires before it stops: the supervisor stops routing to it and answers
//! `Retired`, which the actor handles after every message routed to it before, so none is lost
//! (a result arriving later is handled here, without an actor).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use reap3r_store::Uuid;
use tracing::{error, info, warn};

use super::actor::{JobArgs, Preloaded};
use super::machine::agent_outcome;
use super::{AgentJobEvent, JobActor, JobMsg};
use crate::{AgentCommand, AgentRouter, FleetContext, FleetStats};

/// A job actor that crashes more often than this within `RESTART_WINDOW` is left stopped (the
/// job stays active in the database and resumes at the next node start).
const MAX_RESTARTS: u32 = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct JobSupervisor;

pub enum JobSupervisorMsg {
    /// Start the actor of a job (just created, with its grants, or to be loaded).
    Start(Uuid, Option<Box<Preloaded>>),
    AgentOnline(Uuid),
    FromAgent {
        agent_id: Uuid,
        job_id: Uuid,
        event: AgentJobEvent,
    },
    /// Replies whether a live actor took the cancel.
    Cancel(Uuid, RpcReplyPort<bool>),
    /// Live job actors.
    Count(RpcReplyPort<usize>),
    /// Shutdown: every job actor commits and acks what it holds; replies when all have.
    Drain(RpcReplyPort<()>),
    /// A finished job actor asks to be routed nothing more; answered with `JobMsg::Retired`.
    Retire(Uuid, ActorId),
    /// Test hook: crash the actor of this job.
    #[cfg(feature = "fault-injection")]
    InjectFault(Uuid),
}

impl std::fmt::Debug for JobSupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(id, p) => write!(f, "Start({id}, preloaded: {})", p.is_some()),
            Self::AgentOnline(id) => write!(f, "AgentOnline({id})"),
            Self::FromAgent {
                agent_id, job_id, ..
            } => {
                write!(f, "FromAgent({agent_id}, {job_id})")
            }
            Self::Cancel(id, _) => write!(f, "Cancel({id})"),
            Self::Count(_) => f.write_str("Count"),
            Self::Drain(_) => f.write_str("Drain"),
            Self::Retire(id, _) => write!(f, "Retire({id})"),
            #[cfg(feature = "fault-injection")]
            Self::InjectFault(id) => write!(f, "InjectFault({id})"),
        }
    }
}

pub struct JobSupervisorArgs {
    pub ctx: FleetContext,
    pub router: Arc<dyn AgentRouter>,
}

pub struct JobSupervisorState {
    ctx: FleetContext,
    router: Arc<dyn AgentRouter>,
    jobs: Jobs,
    by_actor: HashMap<ActorId, Uuid>,
    /// job id → (restarts in the current window, window start).
    restarts: HashMap<Uuid, (u32, tokio::time::Instant)>,
}

impl JobSupervisor {
    /// Starts the supervisor under `parent` (the root supervisor), registers it with the
    /// context's router, and resumes every job that is still active in the database.
    pub async fn spawn_linked(
        ctx: FleetContext,
        router: Arc<dyn AgentRouter>,
        parent: ractor::ActorCell,
    ) -> Result<ActorRef<JobSupervisorMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            JobSupervisor,
            JobSupervisorArgs {
                ctx: ctx.clone(),
                router,
            },
            parent,
        )
        .await?;
        ctx.jobs.set(actor.clone());
        Ok(actor)
    }

    /// Starts the supervisor on its own (tests that drive jobs without a node).
    pub async fn start(
        ctx: FleetContext,
        router: Arc<dyn AgentRouter>,
    ) -> Result<ActorRef<JobSupervisorMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(
            None,
            JobSupervisor,
            JobSupervisorArgs {
                ctx: ctx.clone(),
                router,
            },
        )
        .await?;
        ctx.jobs.set(actor.clone());
        Ok(actor)
    }
}

impl Actor for JobSupervisor {
    type Msg = JobSupervisorMsg;
    type State = JobSupervisorState;
    type Arguments = JobSupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<JobSupervisorMsg>,
        args: JobSupervisorArgs,
    ) -> Result<JobSupervisorState, ActorProcessingErr> {
        Ok(JobSupervisorState {
            ctx: args.ctx,
            router: args.router,
            jobs: Jobs::default(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<JobSupervisorMsg>,
        state: &mut JobSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let active = state.ctx.store.active_jobs().await?;
        if !active.is_empty() {
            info!(jobs = active.len(), "resuming active jobs");
        }
        for job in active {
            state.spawn(&myself, job.id, None).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<JobSupervisorMsg>,
        msg: JobSupervisorMsg,
        state: &mut JobSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobSupervisorMsg::Start(job_id, preloaded) => {
                state.spawn(&myself, job_id, preloaded).await
            }
            JobSupervisorMsg::AgentOnline(agent_id) => {
                for job in state.jobs.values() {
                    let _ = job.cast(JobMsg::AgentOnline(agent_id));
                }
            }
            JobSupervisorMsg::FromAgent {
                agent_id,
                job_id,
                event,
            } => match state.jobs.get(&job_id) {
                Some(job) => {
                    // Stopped before it retired (a crash): handled here instead.
                    if let Err(ractor::MessagingErr::SendErr(JobMsg::FromAgent { event, .. })) =
                        job.cast(JobMsg::FromAgent { agent_id, event })
                    {
                        state.without_actor(agent_id, job_id, event);
                    }
                }
                None => state.without_actor(agent_id, job_id, event),
            },
            JobSupervisorMsg::Cancel(job_id, reply) => {
                let taken = state
                    .jobs
                    .get(&job_id)
                    .is_some_and(|j| j.cast(JobMsg::Cancel).is_ok());
                let _ = reply.send(taken);
            }
            JobSupervisorMsg::Count(reply) => {
                let _ = reply.send(state.jobs.len());
            }
            JobSupervisorMsg::Drain(reply) => {
                let jobs: Vec<_> = state.jobs.values().cloned().collect();
                // Each actor answers after its commit; they run concurrently, so the drain takes
                // as long as the slowest commit, not the sum.
                tokio::spawn(async move {
                    let waits = jobs
                        .iter()
                        .map(|job| job.call(JobMsg::Drain, Some(Duration::from_secs(5))));
                    futures::future::join_all(waits).await;
                    let _ = reply.send(());
                });
            }
            JobSupervisorMsg::Retire(job_id, actor) => {
                if let Some(job) = state.jobs.remove_if_actor(job_id, actor) {
                    let _ = job.cast(JobMsg::Retired);
                }
            }
            #[cfg(feature = "fault-injection")]
            JobSupervisorMsg::InjectFault(job_id) => {
                if let Some(job) = state.jobs.get(&job_id) {
                    let _ = job.cast(JobMsg::InjectFault);
                }
            }
        }
        Ok(())
    }

    /// Overrides ractor's default (which would stop the supervisor): a crashed job actor is
    /// counted and restarted from the database, within a restart budget.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<JobSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut JobSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                let id = cell.get_id();
                if let Some(job_id) = state.by_actor.remove(&id) {
                    state.jobs.remove_if_actor(job_id, id);
                    state.restarts.remove(&job_id);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                let Some(job_id) = state.by_actor.remove(&id) else {
                    return Ok(());
                };
                state.jobs.remove_if_actor(job_id, id);
                FleetStats::bump(&state.ctx.stats.job_actor_crashes);
                error!(%job_id, %err, "job actor crashed");
                if state.may_restart(job_id) {
                    state.spawn(&myself, job_id, None).await;
                } else {
                    error!(%job_id, "job actor keeps crashing; left stopped until the next start");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl JobSupervisorState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<JobSupervisorMsg>,
        job_id: Uuid,
        preloaded: Option<Box<Preloaded>>,
    ) {
        if self.jobs.contains_key(&job_id) {
            return;
        }
        let args = JobArgs {
            ctx: self.ctx.clone(),
            router: self.router.clone(),
            supervisor: myself.clone(),
            job_id,
            preloaded,
        };
        match Actor::spawn_linked(None, JobActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), job_id);
                self.jobs.insert(job_id, actor);
            }
            Err(err) => error!(%job_id, %err, "could not start job actor"),
        }
    }

    fn may_restart(&mut self, job_id: Uuid) -> bool {
        let now = tokio::time::Instant::now();
        let entry = self.restarts.entry(job_id).or_insert((0, now));
        if now.duration_since(entry.1) > RESTART_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0 <= MAX_RESTARTS
    }

    /// A message for a job with no live actor: the job finished (or is restarting). A result is
    /// stored if its target is somehow still open (the store's guard decides) and acknowledged
    /// in every case, so the agent can drop it from its outbox.
    fn without_actor(&self, agent_id: Uuid, job_id: Uuid, event: AgentJobEvent) {
        let AgentJobEvent::Result(result) = event else {
            return;
        };
        let ctx = self.ctx.clone();
        let router = self.router.clone();
        tokio::spawn(async move {
            let outcome = agent_outcome(job_id, agent_id, &result);
            let now = ctx.clock.now_ms() as i64;
            match ctx.store.record_outcomes(&[outcome], now).await {
                Ok(applied) => {
                    let counter = if applied.first().copied().unwrap_or(false) {
                        &ctx.stats.job_results_stored
                    } else {
                        &ctx.stats.job_results_duplicate
                    };
                    FleetStats::bump(counter);
                    router.deliver(agent_id, AgentCommand::ResultAck { job_id });
                }
                Err(err) => warn!(%job_id, %agent_id, %err, "could not record a late job result"),
            }
        });
    }
}

/// Live job actors by job id.
#[derive(Default)]
struct Jobs(HashMap<Uuid, ActorRef<JobMsg>>);

impl Jobs {
    fn get(&self, job_id: &Uuid) -> Option<&ActorRef<JobMsg>> {
        self.0.get(job_id)
    }

    fn contains_key(&self, job_id: &Uuid) -> bool {
        self.0.contains_key(job_id)
    }

    fn insert(&mut self, job_id: Uuid, actor: ActorRef<JobMsg>) {
        self.0.insert(job_id, actor);
    }

    fn values(&self) -> impl Iterator<Item = &ActorRef<JobMsg>> {
        self.0.values()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Removes the job's entry only if it is still `actor` (a newer actor of the same job, started
    /// after this one retired, stays).
    fn remove_if_actor(&mut self, job_id: Uuid, actor: ActorId) -> Option<ActorRef<JobMsg>> {
        match self.0.get(&job_id) {
            Some(a) if a.get_id() == actor => self.0.remove(&job_id),
            _ => None,
        }
    }
}
