//! One actor per active job: the driver of its [`JobMachine`]. It turns messages into inputs,
//! and carries out the machine's effects: dispatches, cancels and result acks through the
//! [`AgentRouter`], batches written to the store (the outcome fed back as an input), events
//! published, timers through ractor (a tick for deadlines, a delayed message per flush), and at
//! the end the hand-over to the supervisor before stopping.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use reap3r_store::{Job, Uuid};
use tracing::warn;

use super::machine::{Batch, Effect, Input, JobMachine, Metric, SignedTarget};
use super::{AgentJobEvent, JobSupervisorMsg};
use crate::{AgentCommand, AgentRouter, Delivery, FleetContext, FleetStats};

/// How often timeouts, expiry and cancel deadlines are checked.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct JobActor;

#[derive(Debug)]
pub enum JobMsg {
    /// The agent is live on this node: send it whatever it still has to run.
    AgentOnline(Uuid),
    FromAgent {
        agent_id: Uuid,
        event: AgentJobEvent,
    },
    /// An operator cancelled the job.
    Cancel,
    Tick,
    Flush,
    /// Shutdown: wait for the results live agents are still sending, commit and ack them, then
    /// reply (the caller bounds the wait with the grace period).
    Drain(ractor::RpcReplyPort<()>),
    /// The supervisor routes nothing more here (answer to `JobSupervisorMsg::Retire`).
    Retired,
    /// Test hook: makes the handler panic, to exercise supervision.
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

/// What a freshly created job hands its actor, so it need not read back what it just wrote.
#[derive(Debug)]
pub struct Preloaded {
    pub job: Job,
    /// agent id → its signed grant and sealed secrets, every target queued.
    pub grants: HashMap<Uuid, SignedTarget>,
}

pub struct JobArgs {
    pub ctx: FleetContext,
    pub router: Arc<dyn AgentRouter>,
    pub supervisor: ActorRef<JobSupervisorMsg>,
    pub job_id: Uuid,
    pub preloaded: Option<Box<Preloaded>>,
}

pub struct JobState {
    ctx: FleetContext,
    router: Arc<dyn AgentRouter>,
    supervisor: ActorRef<JobSupervisorMsg>,
    machine: JobMachine,
    /// Shutdown is waiting for this job to be drained (see [`JobMsg::Drain`]).
    drain_reply: Option<ractor::RpcReplyPort<()>>,
}

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobState;
    type Arguments = JobArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobMsg>,
        args: JobArgs,
    ) -> Result<JobState, ActorProcessingErr> {
        let state = JobState::load(args).await?;
        myself.send_interval(TICK, || JobMsg::Tick);
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<JobMsg>,
        state: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        state.run(&myself, Input::Start).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMsg>,
        msg: JobMsg,
        state: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        let input = match msg {
            JobMsg::AgentOnline(agent_id) => Input::AgentOnline(agent_id),
            JobMsg::FromAgent { agent_id, event } => Input::FromAgent { agent_id, event },
            JobMsg::Cancel => Input::Cancel,
            JobMsg::Tick => Input::Tick,
            JobMsg::Flush => Input::Flush,
            JobMsg::Retired => Input::Retired,
            JobMsg::Drain(reply) => {
                state.drain_reply = Some(reply);
                let live = state
                    .machine
                    .agent_ids()
                    .filter(|a| state.router.holds(*a))
                    .collect();
                Input::Drain { live }
            }
            #[cfg(feature = "fault-injection")]
            JobMsg::InjectFault => {
                #[expect(clippy::panic, reason = "the fault being injected")]
                {
                    panic!("fault injected into job actor")
                }
            }
        };
        state.run(&myself, input).await;
        Ok(())
    }
}

impl JobState {
    async fn load(args: JobArgs) -> Result<Self, ActorProcessingErr> {
        let JobArgs {
            ctx,
            router,
            supervisor,
            job_id,
            preloaded,
        } = args;
        let grace = ctx.settings.job_grace_ms;
        let machine = match preloaded {
            Some(p) => {
                let Preloaded { job, grants } = *p;
                JobMachine::new(job, grants, grace)
            }
            None => {
                let job = ctx
                    .store
                    .job(None, job_id)
                    .await?
                    .ok_or_else(|| format!("job {job_id} is not in the database"))?;
                let rows = ctx.store.job_target_grants(job_id).await?;
                let heartbeat_ms = u64::from(ctx.settings.agent_config.heartbeat_interval_s) * 1000;
                JobMachine::resume(job, rows, ctx.clock.now_ms(), grace, heartbeat_ms)
            }
        };
        Ok(Self {
            ctx,
            router,
            supervisor,
            machine,
            drain_reply: None,
        })
    }

    /// Feeds `input`, carries out the effects, and feeds their outcomes back until none is left.
    async fn run(&mut self, myself: &ActorRef<JobMsg>, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let now = self.ctx.clock.now_ms();
            for effect in self.machine.handle(now, input) {
                if let Some(next) = self.apply(myself, effect).await {
                    inputs.push_back(next);
                }
            }
        }
    }

    async fn apply(&mut self, myself: &ActorRef<JobMsg>, effect: Effect) -> Option<Input> {
        let job_id = self.machine.job_id();
        match effect {
            Effect::Dispatch { agent_id, dispatch } => {
                let command = AgentCommand::DispatchJob { job_id, dispatch };
                let delivered = self.router.deliver(agent_id, command) == Delivery::Delivered;
                if delivered {
                    FleetStats::bump(&self.ctx.stats.job_dispatches);
                }
                return Some(Input::Delivery {
                    agent_id,
                    delivered,
                });
            }
            Effect::SendCancel { agent_id } => {
                self.router
                    .deliver(agent_id, AgentCommand::CancelJob { job_id });
            }
            Effect::AckResult { agent_id } => {
                self.router
                    .deliver(agent_id, AgentCommand::ResultAck { job_id });
            }
            Effect::Persist(batch) => return Some(self.persist(batch).await),
            Effect::ScheduleFlush { after_ms: 0 } => {
                let _ = myself.cast(JobMsg::Flush);
            }
            Effect::ScheduleFlush { after_ms } => {
                myself.send_after(Duration::from_millis(after_ms), || JobMsg::Flush);
            }
            Effect::Publish(event) => self.ctx.events.publish(event),
            Effect::Count(Metric::ResultStored) => {
                FleetStats::bump(&self.ctx.stats.job_results_stored)
            }
            Effect::Count(Metric::ResultDuplicate) => {
                FleetStats::bump(&self.ctx.stats.job_results_duplicate)
            }
            Effect::FinishJob(status) => {
                let now = self.ctx.clock.now_ms() as i64;
                let recorded = match self.ctx.store.finish_job(job_id, status, now).await {
                    Ok(_) => true,
                    Err(err) => {
                        warn!(%job_id, %err, "could not mark job finished");
                        false
                    }
                };
                return Some(Input::FinishRecorded { recorded });
            }
            Effect::Retire => {
                let retire = JobSupervisorMsg::Retire(job_id, myself.get_id());
                if self.supervisor.cast(retire).is_err() {
                    // No supervisor to route anything here any more.
                    return Some(Input::Retired);
                }
            }
            Effect::Stop => myself.stop(None),
            Effect::Drained => {
                if let Some(reply) = self.drain_reply.take() {
                    let _ = reply.send(());
                }
            }
        }
        None
    }

    /// Writes one batch: the steps (informative; a failure is only logged), then the outcomes
    /// (what must not be lost; a failure is retried by the machine).
    async fn persist(&self, batch: Batch) -> Input {
        let job_id = self.machine.job_id();
        if !batch.steps.is_empty()
            && let Err(err) = self.ctx.store.transition_targets(&batch.steps).await
        {
            warn!(%job_id, %err, "could not record job progress");
        }
        if batch.outcomes.is_empty() {
            return Input::Committed {
                commit: batch.commit,
                applied: Vec::new(),
            };
        }
        let now = self.ctx.clock.now_ms() as i64;
        match self.ctx.store.record_outcomes(&batch.outcomes, now).await {
            Ok(applied) => Input::Committed {
                commit: batch.commit,
                applied,
            },
            Err(err) => {
                warn!(%job_id, %err, "could not commit job results");
                Input::CommitFailed {
                    commit: batch.commit,
                }
            }
        }
    }
}
