//! One actor per active job: dispatches to online targets, follows each target's state machine,
//! commits results in batches (acking agents only after the commit), enforces timeouts, expiry,
//! cancellation and rolling batches, and finishes the job when every target is terminal.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use reap3r_store::{
    Job, JobStatus, TargetCounts, TargetOutcome, TargetState, TargetTransition, Uuid,
};
use reap3r_wire::{JobAckOutcome, JobDispatch, JobEnd, JobResult, Message, OutputStream};
use tracing::{debug, info, warn};

use super::AgentJobEvent;
use crate::{FleetContext, FleetEvent, FleetStats, SessionMsg, SessionRegistry};

/// How often timeouts, expiry and cancel deadlines are checked.
const TICK: Duration = Duration::from_millis(250);
/// Results are committed at most this long after they arrive (or at once past `FLUSH_AT`).
const FLUSH_DELAY: Duration = Duration::from_millis(5);
const FLUSH_AT: usize = 512;
/// After a failed commit, the batch is retried after this long.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct JobActor;

// `InjectFault` is a hidden test hook, not a non-exhaustive marker.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug)]
pub enum JobMsg {
    /// The agent is live on this node: send it whatever it still has to run.
    AgentOnline(Uuid),
    FromAgent {
        agent_id: Uuid,
        event: AgentJobEvent,
        session: ActorRef<SessionMsg>,
    },
    /// An operator cancelled the job.
    Cancel,
    Tick(u64),
    Flush,
    /// Shutdown: commit what is pending now (and ack it to agents still connected), then reply.
    Drain(ractor::RpcReplyPort<()>),
    /// Test hook: makes the handler panic, to exercise supervision.
    #[doc(hidden)]
    InjectFault,
}

/// What a freshly created job hands its actor, so it need not read back what it just wrote.
#[derive(Debug)]
pub struct Preloaded {
    pub job: Job,
    /// agent id → (grant bytes, signature bytes), every target queued.
    pub grants: HashMap<Uuid, (Vec<u8>, Vec<u8>)>,
}

pub struct JobArgs {
    pub ctx: FleetContext,
    pub registry: SessionRegistry,
    pub job_id: Uuid,
    pub preloaded: Option<Box<Preloaded>>,
}

#[derive(Debug)]
struct Target {
    state: TargetState,
    /// A result later than this (ms) is given up on: timed_out, or cancelled after a cancel.
    deadline: Option<u64>,
    grant: Vec<u8>,
    signature: Vec<u8>,
}

/// A result waiting for the next commit, and who to ack once it is committed.
struct Pending {
    outcome: TargetOutcome,
    /// False for a result of a target that is already terminal: acked, never stored again.
    store: bool,
    ack_to: Option<ActorRef<SessionMsg>>,
}

pub struct JobState {
    ctx: FleetContext,
    registry: SessionRegistry,
    job: Job,
    spec: Vec<u8>,
    targets: HashMap<Uuid, Target>,
    counts: TargetCounts,
    /// Steps not yet written: per target only the furthest since the last flush, carrying the
    /// times of the steps it stands for. A target whose result is committed in the same flush
    /// has its step folded into the result instead (one write per target, not two).
    progress: HashMap<Uuid, TargetTransition>,
    pending: Vec<Pending>,
    flush_scheduled: bool,
    cancelled: bool,
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
        let clock = state.ctx.clock.clone();
        myself.send_interval(TICK, move || JobMsg::Tick(clock.now_ms()));
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<JobMsg>,
        state: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        if state.job.cancel_requested_at.is_some() {
            state.cancel(&myself);
        }
        let online: Vec<Uuid> = state
            .targets
            .keys()
            .copied()
            .filter(|a| state.registry.get(*a).is_some())
            .collect();
        for agent_id in online {
            state.dispatch(agent_id);
        }
        state.schedule_flush(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMsg>,
        msg: JobMsg,
        state: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobMsg::AgentOnline(agent_id) => state.dispatch(agent_id),
            JobMsg::FromAgent {
                agent_id,
                event,
                session,
            } => state.on_agent(agent_id, event, session),
            JobMsg::Cancel => state.cancel(&myself),
            JobMsg::Tick(now) => state.on_tick(now),
            JobMsg::Flush => {
                state.flush_scheduled = false;
                if !state.flush().await {
                    state.flush_scheduled = true;
                    myself.send_after(RETRY_DELAY, || JobMsg::Flush);
                    return Ok(());
                }
                if state.finished() {
                    state.finish().await;
                    myself.stop(None);
                    return Ok(());
                }
            }
            JobMsg::Drain(reply) => {
                state.flush_scheduled = false;
                if !state.flush().await {
                    warn!(job_id = %state.job.id, "pending results not committed at shutdown; agents replay them");
                }
                let _ = reply.send(());
                return Ok(());
            }
            JobMsg::InjectFault => {
                #[allow(clippy::panic)]
                {
                    panic!("fault injected into job actor")
                }
            }
        }
        state.schedule_flush(&myself);
        Ok(())
    }
}

impl JobState {
    async fn load(args: JobArgs) -> Result<Self, ActorProcessingErr> {
        let JobArgs {
            ctx,
            registry,
            job_id,
            preloaded,
        } = args;
        let now = ctx.clock.now_ms();
        let grace = ctx.settings.job_grace_ms;
        let (job, targets) = match preloaded {
            Some(p) => {
                let targets = p
                    .grants
                    .into_iter()
                    .map(|(agent_id, (grant, signature))| {
                        let t = Target {
                            state: TargetState::Queued,
                            deadline: None,
                            grant,
                            signature,
                        };
                        (agent_id, t)
                    })
                    .collect();
                (p.job, targets)
            }
            None => {
                let job = ctx
                    .store
                    .job(None, job_id)
                    .await?
                    .ok_or_else(|| format!("job {job_id} is not in the database"))?;
                let timeout_ms = job.timeout_s.max(0) as u64 * 1000;
                let mut targets = HashMap::new();
                for row in ctx.store.job_target_grants(job_id).await? {
                    // A restart must give agents time to reconnect and replay their results
                    // before anything is declared timed out.
                    let deadline = row
                        .dispatched_at
                        .map(|d| (d.max(0) as u64 + timeout_ms + grace).max(now + grace));
                    targets.insert(
                        row.agent_id,
                        Target {
                            state: row.state,
                            deadline,
                            grant: hex_bytes(&row.grant_hex),
                            signature: hex_bytes(&row.signature_hex),
                        },
                    );
                }
                (job, targets)
            }
        };
        let spec = hex_bytes(&job.spec_hex);
        let mut counts = TargetCounts::default();
        for t in targets.values() {
            counts.add(t.state);
        }
        Ok(Self {
            ctx,
            registry,
            cancelled: job.cancel_requested_at.is_some(),
            job,
            spec,
            targets,
            counts,
            progress: HashMap::new(),
            pending: Vec::new(),
            flush_scheduled: false,
        })
    }

    fn now(&self) -> u64 {
        self.ctx.clock.now_ms()
    }

    fn timeout_ms(&self) -> u64 {
        self.job.timeout_s.max(0) as u64 * 1000
    }

    fn in_flight(&self) -> i64 {
        self.counts.dispatched + self.counts.acked + self.counts.running
    }

    fn batch_full(&self) -> bool {
        self.job
            .batch_size
            .is_some_and(|b| self.in_flight() >= b.max(1))
    }

    /// Sends the job to `agent_id` if it is live here and still has it to do. A target already
    /// dispatched is sent again (its stream died with the old connection); the agent's ledger
    /// answers `Duplicate` if it already has it.
    fn dispatch(&mut self, agent_id: Uuid) {
        if self.cancelled {
            return;
        }
        let Some(target) = self.targets.get(&agent_id) else {
            return;
        };
        if target.state.is_terminal() {
            return;
        }
        let queued = target.state == TargetState::Queued;
        if queued && self.batch_full() {
            return;
        }
        let Some(session) = self.registry.get(agent_id) else {
            return;
        };
        let dispatch = JobDispatch {
            spec: self.spec.clone(),
            grant: target.grant.clone(),
            signature: target.signature.clone(),
        };
        if session
            .cast(SessionMsg::DispatchJob(self.job.id, Box::new(dispatch)))
            .is_err()
        {
            return;
        }
        FleetStats::bump(&self.ctx.stats.job_dispatches);
        if queued {
            let now = self.now();
            let deadline = now + self.timeout_ms() + self.ctx.settings.job_grace_ms;
            self.set_state(agent_id, TargetState::Dispatched, now);
            if let Some(t) = self.targets.get_mut(&agent_id) {
                t.deadline = Some(deadline);
            }
        }
    }

    /// Moves a target forward (non-terminal states), persisting at the next flush.
    fn set_state(&mut self, agent_id: Uuid, to: TargetState, at_ms: u64) {
        let Some(t) = self.targets.get_mut(&agent_id) else {
            return;
        };
        if t.state.is_terminal() || rank(to) <= rank(t.state) {
            return;
        }
        self.counts.remove(t.state);
        self.counts.add(to);
        t.state = to;
        let step = TargetTransition::new(self.job.id, agent_id, to, at_ms as i64);
        // An earlier step not written yet is replaced by this one, which carries its times.
        self.progress
            .entry(agent_id)
            .and_modify(|earlier| *earlier = supersede(*earlier, step))
            .or_insert(step);
        self.publish_update(Some(agent_id), to.as_str());
    }

    fn on_agent(&mut self, agent_id: Uuid, event: AgentJobEvent, session: ActorRef<SessionMsg>) {
        if !self.targets.contains_key(&agent_id) {
            // Not a target of this job: nothing to record, and no ack (nothing was stored).
            warn!(job_id = %self.job.id, %agent_id, "job message from an agent that is not a target");
            return;
        }
        let now = self.now();
        match event {
            AgentJobEvent::Ack(JobAckOutcome::Accepted) => {
                self.set_state(agent_id, TargetState::Acked, now)
            }
            AgentJobEvent::Ack(JobAckOutcome::Duplicate) => {
                debug!(job_id = %self.job.id, %agent_id, "agent already has this job")
            }
            AgentJobEvent::Ack(JobAckOutcome::Refused(reason)) => {
                warn!(job_id = %self.job.id, %agent_id, %reason, "agent refused the job");
                let outcome = server_outcome(
                    self.job.id,
                    agent_id,
                    TargetState::Failed,
                    format!("refused by agent: {reason}"),
                    now,
                );
                self.conclude(agent_id, outcome, None);
            }
            AgentJobEvent::Started { at_ms } => {
                self.set_state(agent_id, TargetState::Running, at_ms.min(now))
            }
            AgentJobEvent::Output(out) => self.ctx.events.publish(FleetEvent::JobOutput {
                job_id: self.job.id,
                org_id: self.job.org_id,
                agent_id,
                stream: match out.stream {
                    OutputStream::Stdout => "stdout",
                    OutputStream::Stderr => "stderr",
                },
                offset: out.offset,
                data: String::from_utf8_lossy(&out.data).into_owned(),
            }),
            AgentJobEvent::Result(result) => {
                let outcome = agent_outcome(self.job.id, agent_id, &result);
                self.conclude(agent_id, outcome, Some(session));
            }
        }
    }

    /// Queues a terminal outcome. The first one for a target is stored; later ones (replays)
    /// are only acknowledged, after the commit of whatever is pending.
    fn conclude(
        &mut self,
        agent_id: Uuid,
        outcome: TargetOutcome,
        ack_to: Option<ActorRef<SessionMsg>>,
    ) {
        let Some(t) = self.targets.get_mut(&agent_id) else {
            return;
        };
        let store = !t.state.is_terminal();
        if store {
            self.counts.remove(t.state);
            self.counts.add(outcome.state);
            t.state = outcome.state;
            t.deadline = None;
        }
        self.pending.push(Pending {
            outcome,
            store,
            ack_to,
        });
    }

    fn cancel(&mut self, myself: &ActorRef<JobMsg>) {
        let now = self.now();
        let first = !self.cancelled;
        self.cancelled = true;
        let deadline = now + self.ctx.settings.job_grace_ms;
        let ids: Vec<Uuid> = self.targets.keys().copied().collect();
        for agent_id in ids {
            let Some(t) = self.targets.get_mut(&agent_id) else {
                continue;
            };
            match t.state {
                TargetState::Queued => {
                    let outcome = server_outcome(
                        self.job.id,
                        agent_id,
                        TargetState::Cancelled,
                        "cancelled before it was dispatched".into(),
                        now,
                    );
                    self.conclude(agent_id, outcome, None);
                }
                s if !s.is_terminal() => {
                    t.deadline = Some(t.deadline.map_or(deadline, |d| d.min(deadline)));
                    if let Some(session) = self.registry.get(agent_id) {
                        let _ = session.cast(SessionMsg::Send(Message::JobCancel {
                            job_id: self.job.id.into_bytes(),
                        }));
                    }
                }
                _ => {}
            }
        }
        if first {
            info!(job_id = %self.job.id, "job cancelled");
            self.publish_update(None, "cancelling");
        }
        self.schedule_flush(myself);
    }

    fn on_tick(&mut self, now: u64) {
        let expired = self.job.expires_at.is_some_and(|e| now as i64 >= e);
        let mut due = Vec::new();
        for (agent_id, t) in &self.targets {
            if t.state == TargetState::Queued && expired {
                due.push((
                    *agent_id,
                    TargetState::Expired,
                    "expired before the agent was reachable",
                ));
            } else if !t.state.is_terminal() && t.deadline.is_some_and(|d| now > d) {
                if self.cancelled {
                    due.push((
                        *agent_id,
                        TargetState::Cancelled,
                        "cancelled; the agent did not confirm in time",
                    ));
                } else {
                    due.push((
                        *agent_id,
                        TargetState::TimedOut,
                        "no result from the agent within the timeout",
                    ));
                }
            }
        }
        for (agent_id, state, why) in due {
            let outcome = server_outcome(self.job.id, agent_id, state, why.into(), now);
            self.conclude(agent_id, outcome, None);
        }
    }

    fn schedule_flush(&mut self, myself: &ActorRef<JobMsg>) {
        if self.flush_scheduled {
            return;
        }
        if self.pending.is_empty() && self.progress.is_empty() && !self.finished() {
            return;
        }
        self.flush_scheduled = true;
        if self.pending.len() >= FLUSH_AT {
            let _ = myself.cast(JobMsg::Flush);
        } else {
            myself.send_after(FLUSH_DELAY, || JobMsg::Flush);
        }
    }

    /// Commits transitions and results; acks agents only after their result is committed.
    /// Returns false when the commit failed (everything stays queued for a retry).
    async fn flush(&mut self) -> bool {
        // A result going out now writes its target's step times itself.
        for p in self.pending.iter_mut().filter(|p| p.store) {
            if let Some(step) = self.progress.remove(&p.outcome.agent_id) {
                fold_step(step, &mut p.outcome);
            }
        }
        if !self.progress.is_empty() {
            let batch: Vec<TargetTransition> = self.progress.drain().map(|(_, t)| t).collect();
            if let Err(err) = self.ctx.store.transition_targets(&batch).await {
                // States before the result are informative; the result is what must not be lost.
                warn!(job_id = %self.job.id, %err, "could not record job progress");
            }
        }
        if self.pending.is_empty() {
            return true;
        }
        let to_store: Vec<TargetOutcome> = self
            .pending
            .iter()
            .filter(|p| p.store)
            .map(|p| p.outcome.clone())
            .collect();
        let now = self.now() as i64;
        let applied = match self.ctx.store.record_outcomes(&to_store, now).await {
            Ok(applied) => applied,
            Err(err) => {
                warn!(job_id = %self.job.id, %err, "could not commit job results; retrying");
                return false;
            }
        };
        let stored = applied.iter().filter(|a| **a).count() as u64;
        let stats = &self.ctx.stats;
        stats
            .job_results_stored
            .fetch_add(stored, std::sync::atomic::Ordering::Relaxed);
        let duplicates = self.pending.len() as u64 - stored;
        stats
            .job_results_duplicate
            .fetch_add(duplicates, std::sync::atomic::Ordering::Relaxed);
        let pending = std::mem::take(&mut self.pending);
        let mut applied = applied.into_iter();
        for p in pending {
            let was_stored = p.store && applied.next().unwrap_or(false);
            if let Some(session) = p.ack_to {
                let _ = session.cast(SessionMsg::Send(Message::JobResultAck {
                    job_id: self.job.id.into_bytes(),
                }));
            }
            if was_stored {
                self.publish_update(Some(p.outcome.agent_id), p.outcome.state.as_str());
            }
        }
        // Finished targets free batch slots.
        if self.job.batch_size.is_some() && !self.cancelled {
            let queued: Vec<Uuid> = self
                .targets
                .iter()
                .filter(|(_, t)| t.state == TargetState::Queued)
                .map(|(a, _)| *a)
                .collect();
            for agent_id in queued {
                if self.batch_full() {
                    break;
                }
                self.dispatch(agent_id);
            }
        }
        true
    }

    fn finished(&self) -> bool {
        self.pending.is_empty()
            && self.progress.is_empty()
            && self.counts.finished() == self.targets.len() as i64
    }

    async fn finish(&mut self) {
        let status = if self.cancelled {
            JobStatus::Cancelled
        } else {
            JobStatus::Completed
        };
        let now = self.now() as i64;
        match self.ctx.store.finish_job(self.job.id, status, now).await {
            Ok(_) => {
                info!(job_id = %self.job.id, status = status.as_str(), "job finished");
                self.publish_update(None, status.as_str());
            }
            Err(err) => warn!(job_id = %self.job.id, %err, "could not mark job finished"),
        }
    }

    fn publish_update(&self, agent_id: Option<Uuid>, state: &str) {
        self.ctx.events.publish(FleetEvent::JobUpdate {
            job_id: self.job.id,
            org_id: self.job.org_id,
            agent_id,
            state: state.to_string(),
            counts: self.counts,
        });
    }
}

/// Order of the non-terminal states; a target only moves forward.
fn rank(s: TargetState) -> u8 {
    match s {
        TargetState::Queued => 0,
        TargetState::Dispatched => 1,
        TargetState::Acked => 2,
        TargetState::Running => 3,
        _ => 4,
    }
}

/// `later` (a further step of the same target) standing for `earlier` too: it carries the
/// dispatch time and the ack time `earlier` would have written.
fn supersede(earlier: TargetTransition, mut later: TargetTransition) -> TargetTransition {
    later.dispatched_at = Some(earlier.dispatched_at.unwrap_or(earlier.at_ms));
    later.acked_at = match earlier.to {
        TargetState::Acked => Some(earlier.at_ms),
        _ => earlier.acked_at,
    };
    later
}

/// Moves the times of an unwritten step into the result of the same target, which then writes
/// them where the row has none: the dispatch and ack times, and the start time reported by
/// `JobStarted` (which wins over the result's own, as it would had the step been written).
fn fold_step(step: TargetTransition, outcome: &mut TargetOutcome) {
    let (dispatched, acked, started) = match step.to {
        TargetState::Dispatched => (Some(step.at_ms), None, None),
        TargetState::Acked => (
            step.dispatched_at.or(Some(step.at_ms)),
            Some(step.at_ms),
            None,
        ),
        _ => (
            step.dispatched_at.or(Some(step.at_ms)),
            step.acked_at,
            Some(step.at_ms),
        ),
    };
    outcome.dispatched_at = outcome.dispatched_at.or(dispatched);
    outcome.acked_at = outcome.acked_at.or(acked);
    outcome.started_at = started.or(outcome.started_at);
}

fn server_outcome(
    job_id: Uuid,
    agent_id: Uuid,
    state: TargetState,
    error: String,
    now: u64,
) -> TargetOutcome {
    TargetOutcome {
        job_id,
        agent_id,
        state,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        data: None,
        error: Some(error),
        dispatched_at: None,
        acked_at: None,
        started_at: None,
        finished_at: now as i64,
    }
}

pub(crate) fn agent_outcome(job_id: Uuid, agent_id: Uuid, r: &JobResult) -> TargetOutcome {
    let state = match r.end {
        JobEnd::Succeeded => TargetState::Succeeded,
        JobEnd::Failed | JobEnd::Refused => TargetState::Failed,
        JobEnd::TimedOut => TargetState::TimedOut,
        JobEnd::Cancelled => TargetState::Cancelled,
    };
    let error = match (r.end, &r.error) {
        (JobEnd::Refused, Some(e)) => Some(format!("refused by agent: {e}")),
        (JobEnd::Refused, None) => Some("refused by agent".into()),
        (_, e) => e.clone(),
    };
    TargetOutcome {
        job_id,
        agent_id,
        state,
        exit_code: r.exit_code.map(i64::from),
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        data: r.data.clone(),
        error,
        dispatched_at: None,
        acked_at: None,
        started_at: (r.started_at_ms > 0).then_some(r.started_at_ms as i64),
        finished_at: r.finished_at_ms as i64,
    }
}

/// Stored hex (written by this server) back to bytes; a corrupt value dispatches as empty bytes,
/// which the agent refuses.
fn hex_bytes(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(to: TargetState, at: i64) -> TargetTransition {
        TargetTransition::new(Uuid::nil(), Uuid::nil(), to, at)
    }

    fn result(started_at: Option<i64>) -> TargetOutcome {
        let mut o = server_outcome(
            Uuid::nil(),
            Uuid::nil(),
            TargetState::Succeeded,
            "".into(),
            9,
        );
        o.started_at = started_at;
        o
    }

    #[test]
    fn a_later_step_carries_the_earlier_times() {
        use TargetState::*;
        let acked = supersede(step(Dispatched, 1), step(Acked, 2));
        assert_eq!((acked.to, acked.at_ms), (Acked, 2));
        assert_eq!((acked.dispatched_at, acked.acked_at), (Some(1), None));
        let running = supersede(acked, step(Running, 3));
        assert_eq!((running.to, running.at_ms), (Running, 3));
        assert_eq!(
            (running.dispatched_at, running.acked_at),
            (Some(1), Some(2))
        );
        // Dispatched in an earlier flush: the ack's time is the fallback, as in the store.
        let running = supersede(step(Acked, 5), step(Running, 6));
        assert_eq!(
            (running.dispatched_at, running.acked_at),
            (Some(5), Some(5))
        );
        let running = supersede(step(Dispatched, 7), step(Running, 8));
        assert_eq!((running.dispatched_at, running.acked_at), (Some(7), None));
    }

    #[test]
    fn a_result_takes_the_times_of_its_unwritten_step() {
        use TargetState::*;
        let mut o = result(Some(50));
        fold_step(step(Dispatched, 1), &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(1), None, Some(50))
        );

        let mut o = result(Some(50));
        fold_step(step(Acked, 2), &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(2), Some(2), Some(50))
        );

        // JobStarted's time wins over the result's own, as when the step was written first.
        let mut o = result(Some(50));
        let running = supersede(
            supersede(step(Dispatched, 1), step(Acked, 2)),
            step(Running, 3),
        );
        fold_step(running, &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(1), Some(2), Some(3))
        );

        let mut o = result(None);
        fold_step(step(Running, 4), &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(4), None, Some(4))
        );
    }
}
