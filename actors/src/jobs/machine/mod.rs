//! The per-target state machine of one job, free of I/O: a [`JobMachine`] is driven as
//! `handle(now, input) -> effects` (the shape of quinn-proto's `Connection`). Inputs are what
//! happens to the job (agent events, ticks, commit outcomes, agents coming online, deliveries
//! failing, cancel requests); effects are what the driver must do (send a dispatch, a cancel or a
//! result ack through the agent router, persist one batch of steps and outcomes, publish an
//! event, finish and retire the job). The [`JobActor`](super::JobActor) is the driver: it feeds
//! inputs, carries out effects and feeds their outcomes back.
//!
//! Per target: `queued → dispatched → acked → running → succeeded | failed | timed_out |
//! cancelled`, or `queued → expired`; see docs/JOBS.md and the transition table in the tests.
//!
//! - [`target`]: one target's state, how steps merge, the outcomes the server writes itself.
//! - [`dispatch`]: dispatch on start and on reconnect, rolling batches, failed deliveries.
//! - [`deadline`]: ticks (timeouts with grace, expiry) and cancellation.
//! - [`commit`]: results and steps batched into one persist, acks after the commit, finishing
//!   and retiring the job.

mod commit;
mod deadline;
mod dispatch;
mod drain;
mod target;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use reap3r_store::{
    Job, JobStatus, JobTargetGrant, TargetCounts, TargetOutcome, TargetState, TargetTransition,
    Uuid,
};
use reap3r_wire::{JobAckOutcome, JobDispatch, OutputStream};
use tracing::{debug, warn};

pub use self::target::SignedTarget;
use self::target::Target;
pub(crate) use self::target::agent_outcome;
use super::AgentJobEvent;
use crate::FleetEvent;

/// Results are committed at most this long after they arrive (or at once past [`FLUSH_AT`]).
pub const FLUSH_DELAY_MS: u64 = 5;
/// Pending results that make a flush go out at once.
pub const FLUSH_AT: usize = 512;
/// After a failed commit, the batch is retried after this long.
pub const RETRY_DELAY_MS: u64 = 1_000;

/// Something that happened to the job, fed to [`JobMachine::handle`].
#[derive(Debug)]
pub enum Input {
    /// The driver is ready: apply a cancel requested before a restart, and offer the job to
    /// every target that still has it to do.
    Start,
    /// The agent completed its hello on this node: whatever it still has to do goes out again.
    AgentOnline(Uuid),
    /// What the router answered to an [`Effect::Dispatch`].
    Delivery { agent_id: Uuid, delivered: bool },
    /// A verified job message from the agent.
    FromAgent {
        agent_id: Uuid,
        event: AgentJobEvent,
    },
    /// An operator cancelled the job.
    Cancel,
    /// Time passed: timeouts, cancel deadlines and expiry are checked.
    Tick,
    /// The flush timer asked for by [`Effect::ScheduleFlush`] fired.
    Flush,
    /// The batch of [`Effect::Persist`] committed; `applied[i]` says whether `outcomes[i]` was
    /// written (false: the store already had the target terminal).
    Committed { commit: u64, applied: Vec<bool> },
    /// The batch of [`Effect::Persist`] could not be committed.
    CommitFailed { commit: u64 },
    /// The outcome of [`Effect::FinishJob`].
    FinishRecorded { recorded: bool },
    /// The supervisor routes nothing more to this job (answer to [`Effect::Retire`]); every
    /// message it routed before is already handled.
    Retired,
    /// The node is shutting down; `live` are the agents connected to it. Nothing new is sent;
    /// results still on their way from live agents are waited for (see [`drain`]).
    Drain { live: BTreeSet<Uuid> },
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send the job to the agent on a new stream; answer with [`Input::Delivery`].
    Dispatch {
        agent_id: Uuid,
        dispatch: Box<JobDispatch>,
    },
    /// Send `JobCancel` to the agent.
    SendCancel {
        agent_id: Uuid,
    },
    /// Send `JobResultAck` to the agent: its result is committed.
    AckResult {
        agent_id: Uuid,
    },
    /// Write these steps and outcomes (one batch); answer with [`Input::Committed`] or
    /// [`Input::CommitFailed`].
    Persist(Batch),
    /// Feed [`Input::Flush`] after this long.
    ScheduleFlush {
        after_ms: u64,
    },
    Publish(FleetEvent),
    Count(Metric),
    /// Mark the job finished with this status; answer with [`Input::FinishRecorded`].
    FinishJob(JobStatus),
    /// Ask the supervisor to route nothing more here; it answers with [`Input::Retired`].
    Retire,
    /// The job is done: stop the driver.
    Stop,
    /// Draining: nothing the node could still save is left (answer to [`Input::Drain`]).
    Drained,
}

/// One write of the job's progress: steps of non-terminal targets and terminal outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub commit: u64,
    pub steps: Vec<TargetTransition>,
    pub outcomes: Vec<TargetOutcome>,
}

/// Counters the driver keeps (`reap3r_job_results_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    ResultStored,
    ResultDuplicate,
}

/// Where the job as a whole stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Targets are still to be decided, or their outcomes still to be committed.
    Active,
    /// Every outcome is committed; the job's own status is being written.
    Finishing,
    /// Waiting for the supervisor to stop routing; late results are still acknowledged.
    Retiring,
    Stopped,
}

/// One job's targets and everything not yet written about them.
#[derive(Debug)]
pub struct JobMachine {
    job: Job,
    spec: Vec<u8>,
    grace_ms: u64,
    targets: BTreeMap<Uuid, Target>,
    counts: TargetCounts,
    /// Steps not yet written: per target only the furthest since the last flush, carrying the
    /// times of the steps it stands for. A target whose result goes out in the same flush has
    /// its step folded into the result instead (one write per target, not two).
    progress: BTreeMap<Uuid, TargetTransition>,
    /// Outcomes waiting for the next flush.
    pending: Vec<TargetOutcome>,
    /// The batch being committed, if any.
    committing: Option<Batch>,
    next_commit: u64,
    /// The delay of the flush timer asked for and not fired yet.
    flush_scheduled: Option<u64>,
    cancelled: bool,
    /// Agents whose last delivery failed and who have not come online since: batch refills
    /// skip them.
    unreachable: BTreeSet<Uuid>,
    /// Queued targets being offered (see `Target::offered`).
    offers: i64,
    phase: Phase,
    /// Set at shutdown: the agents connected to this node (see [`drain`]).
    draining: Option<BTreeSet<Uuid>>,
    drained: bool,
    out: Vec<Effect>,
}

impl JobMachine {
    /// A job just created: every target queued with its signed grant and sealed secrets.
    pub fn new(
        job: Job,
        grants: impl IntoIterator<Item = (Uuid, SignedTarget)>,
        grace_ms: u64,
    ) -> Self {
        let targets = grants
            .into_iter()
            .map(|(agent_id, signed)| (agent_id, Target::queued(signed)))
            .collect();
        Self::with_targets(job, targets, grace_ms)
    }

    /// A job reloaded from the database (node restart, crashed actor). A target dispatched
    /// before gets its deadline from its dispatch time, but never sooner than `reconnect_ms`
    /// plus a grace from `now`: agents must have time to notice the restart, reconnect and
    /// replay their results first. An agent notices at its next packet, which the restarted
    /// endpoint answers with a stateless reset; one waiting for an ack sends nothing before its
    /// next heartbeat, so `reconnect_ms` is the heartbeat interval.
    pub fn resume(
        job: Job,
        rows: Vec<JobTargetGrant>,
        now: u64,
        grace_ms: u64,
        reconnect_ms: u64,
    ) -> Self {
        let timeout_ms = timeout_ms(&job);
        let floor = now + reconnect_ms + grace_ms;
        let targets = rows
            .into_iter()
            .map(|row| {
                let deadline = row
                    .dispatched_at
                    .map(|d| (d.max(0) as u64 + timeout_ms + grace_ms).max(floor));
                let signed = SignedTarget {
                    grant: hex_bytes(&row.grant_hex),
                    signature: hex_bytes(&row.signature_hex),
                    sealed: row.sealed_hex.as_deref().map(hex_bytes).unwrap_or_default(),
                };
                let target = Target::loaded(row.state, deadline, signed);
                (row.agent_id, target)
            })
            .collect();
        Self::with_targets(job, targets, grace_ms)
    }

    fn with_targets(job: Job, targets: BTreeMap<Uuid, Target>, grace_ms: u64) -> Self {
        let mut counts = TargetCounts::default();
        for t in targets.values() {
            counts.add(t.state);
        }
        Self {
            spec: hex_bytes(&job.spec_hex),
            grace_ms,
            counts,
            targets,
            progress: BTreeMap::new(),
            pending: Vec::new(),
            committing: None,
            next_commit: 1,
            flush_scheduled: None,
            cancelled: false,
            unreachable: BTreeSet::new(),
            offers: 0,
            phase: Phase::Active,
            draining: None,
            drained: false,
            out: Vec::new(),
            job,
        }
    }

    /// Every agent the job targets.
    pub fn agent_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.targets.keys().copied()
    }

    pub fn job_id(&self) -> Uuid {
        self.job.id
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn counts(&self) -> TargetCounts {
        self.counts
    }

    /// A target's state, if it is one of the job's.
    pub fn state(&self, agent_id: Uuid) -> Option<TargetState> {
        self.targets.get(&agent_id).map(|t| t.state)
    }

    /// Applies one input at time `now` (ms) and returns what the driver must do, in order.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Effect> {
        match input {
            Input::Start => {
                if self.job.cancel_requested_at.is_some() {
                    self.cancel(now);
                }
                self.offer_all();
            }
            Input::AgentOnline(agent_id) => self.agent_online(agent_id),
            Input::Delivery {
                agent_id,
                delivered,
            } => self.delivery(agent_id, delivered, now),
            Input::FromAgent { agent_id, event } => self.on_agent(agent_id, event, now),
            Input::Cancel => {
                if self.phase == Phase::Active {
                    self.cancel(now);
                }
            }
            Input::Tick => self.tick(now),
            Input::Flush => {
                self.flush_scheduled = None;
                self.flush();
            }
            Input::Committed { commit, applied } => self.committed(commit, applied),
            Input::CommitFailed { commit } => self.commit_failed(commit),
            Input::FinishRecorded { recorded } => self.finish_recorded(recorded),
            Input::Retired => {
                if self.phase == Phase::Retiring {
                    self.phase = Phase::Stopped;
                    self.out.push(Effect::Stop);
                }
            }
            Input::Drain { live } => self.drain(live),
        }
        self.maybe_finish();
        self.schedule_flush();
        self.check_drained();
        std::mem::take(&mut self.out)
    }

    fn on_agent(&mut self, agent_id: Uuid, event: AgentJobEvent, now: u64) {
        if !self.targets.contains_key(&agent_id) {
            // Not a target of this job: nothing to record, and no ack (nothing was stored).
            warn!(job_id = %self.job.id, %agent_id, "job message from an agent that is not a target");
            return;
        }
        match event {
            AgentJobEvent::Ack(JobAckOutcome::Accepted) => {
                self.set_state(agent_id, TargetState::Acked, now)
            }
            AgentJobEvent::Ack(JobAckOutcome::Duplicate) => {
                debug!(job_id = %self.job.id, %agent_id, "agent already has this job")
            }
            AgentJobEvent::Ack(JobAckOutcome::Refused(reason)) => {
                warn!(job_id = %self.job.id, %agent_id, %reason, "agent refused the job");
                let outcome = target::server_outcome(
                    self.job.id,
                    agent_id,
                    TargetState::Failed,
                    format!("refused by agent: {reason}"),
                    now,
                );
                self.conclude(agent_id, outcome, false);
            }
            AgentJobEvent::Started { at_ms } => {
                self.set_state(agent_id, TargetState::Running, at_ms.min(now))
            }
            AgentJobEvent::Output(out) => self.out.push(Effect::Publish(FleetEvent::JobOutput {
                job_id: self.job.id,
                org_id: self.job.org_id,
                agent_id,
                stream: match out.stream {
                    OutputStream::Stdout => "stdout",
                    OutputStream::Stderr => "stderr",
                },
                offset: out.offset,
                data: String::from_utf8_lossy(&out.data).into_owned(),
            })),
            AgentJobEvent::Result(result) => {
                let outcome = agent_outcome(self.job.id, agent_id, &result);
                self.conclude(agent_id, outcome, true);
            }
        }
    }

    /// Moves a target forward (non-terminal states), persisting at the next flush.
    fn set_state(&mut self, agent_id: Uuid, to: TargetState, at_ms: u64) {
        let Some(t) = self.targets.get_mut(&agent_id) else {
            return;
        };
        if t.state.is_terminal() || target::rank(to) <= target::rank(t.state) {
            return;
        }
        self.counts.remove(t.state);
        self.counts.add(to);
        t.state = to;
        let step = TargetTransition::new(self.job.id, agent_id, to, at_ms as i64);
        // An earlier step not written yet is replaced by this one, which carries its times.
        self.progress
            .entry(agent_id)
            .and_modify(|earlier| *earlier = target::supersede(*earlier, step))
            .or_insert(step);
        self.publish_update(Some(agent_id), to.as_str());
    }

    fn publish_update(&mut self, agent_id: Option<Uuid>, state: &str) {
        self.out.push(Effect::Publish(FleetEvent::JobUpdate {
            job_id: self.job.id,
            org_id: self.job.org_id,
            agent_id,
            state: state.to_string(),
            counts: self.counts,
        }));
    }
}

fn timeout_ms(job: &Job) -> u64 {
    job.timeout_s.max(0) as u64 * 1000
}

/// Stored hex (written by this server) back to bytes; a corrupt value dispatches as empty bytes,
/// which the agent refuses.
fn hex_bytes(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_default()
}
