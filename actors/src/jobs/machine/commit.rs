//! Writing what was decided: outcomes wait in `pending` and go out with the unwritten steps as
//! one [`Batch`] per flush, one batch in flight at a time. An agent's result is acknowledged only
//! once its outcome is committed; a result for a target already terminal is a duplicate (an
//! outbox replay, a result after the server timed the target out) and is acknowledged at once if
//! that outcome is committed, else right after its commit. A failed commit keeps everything for
//! a retry. When every outcome is committed the job finishes, then retires: the supervisor stops
//! routing to it, and results it routed before are still acknowledged.

use reap3r_store::{JobStatus, TargetOutcome, Uuid};
use tracing::{info, warn};

use super::{
    Batch, Effect, FLUSH_AT, FLUSH_DELAY_MS, JobMachine, Metric, Phase, RETRY_DELAY_MS, target,
};

impl JobMachine {
    /// Records a terminal outcome. The first one for a target is stored; later ones (replays,
    /// late results) only owe the agent an ack (`ack`: the outcome is the agent's own result).
    pub(super) fn conclude(&mut self, agent_id: Uuid, outcome: TargetOutcome, ack: bool) {
        let Some(t) = self.targets.get_mut(&agent_id) else {
            return;
        };
        if !t.state.is_terminal() {
            self.counts.remove(t.state);
            self.counts.add(outcome.state);
            t.state = outcome.state;
            t.deadline = None;
            t.acks_owed = u32::from(ack);
            self.pending.push(outcome);
            return;
        }
        if !ack {
            return;
        }
        self.out.push(Effect::Count(Metric::ResultDuplicate));
        if t.stored {
            self.out.push(Effect::AckResult { agent_id });
        } else {
            t.acks_owed += 1;
        }
    }

    /// Asks for a flush if something waits to be written and none is scheduled or running; at
    /// once, even if a delayed one is scheduled, when [`FLUSH_AT`] results wait.
    pub(super) fn schedule_flush(&mut self) {
        let urgent = self.pending.len() >= FLUSH_AT;
        match self.flush_scheduled {
            Some(0) => return,
            Some(_) if !urgent => return,
            _ => {}
        }
        if self.committing.is_some() || (self.pending.is_empty() && self.progress.is_empty()) {
            return;
        }
        let after_ms = if urgent { 0 } else { FLUSH_DELAY_MS };
        self.flush_scheduled = Some(after_ms);
        self.out.push(Effect::ScheduleFlush { after_ms });
    }

    /// Everything unwritten goes out as one batch.
    pub(super) fn flush(&mut self) {
        if self.committing.is_some() || (self.pending.is_empty() && self.progress.is_empty()) {
            return;
        }
        let mut outcomes = std::mem::take(&mut self.pending);
        // A result going out now writes its target's step times itself.
        for o in &mut outcomes {
            if let Some(step) = self.progress.remove(&o.agent_id) {
                target::fold_step(step, o);
            }
        }
        let steps = std::mem::take(&mut self.progress).into_values().collect();
        let batch = Batch {
            commit: self.next_commit,
            steps,
            outcomes,
        };
        self.next_commit += 1;
        self.committing = Some(batch.clone());
        self.out.push(Effect::Persist(batch));
    }

    pub(super) fn committed(&mut self, commit: u64, applied: Vec<bool>) {
        let Some(batch) = self.committing.take_if(|b| b.commit == commit) else {
            return;
        };
        let mut applied = applied.into_iter();
        for outcome in batch.outcomes {
            let agent_id = outcome.agent_id;
            let was_applied = applied.next().unwrap_or(false);
            let Some(t) = self.targets.get_mut(&agent_id) else {
                continue;
            };
            t.stored = true;
            for _ in 0..std::mem::take(&mut t.acks_owed) {
                self.out.push(Effect::AckResult { agent_id });
            }
            if was_applied {
                self.out.push(Effect::Count(Metric::ResultStored));
                self.publish_update(Some(agent_id), outcome.state.as_str());
            } else {
                self.out.push(Effect::Count(Metric::ResultDuplicate));
            }
        }
        // Finished targets free batch slots.
        self.refill();
    }

    /// The batch goes back in front of whatever came since, and is retried later.
    pub(super) fn commit_failed(&mut self, commit: u64) {
        let Some(batch) = self.committing.take_if(|b| b.commit == commit) else {
            return;
        };
        warn!(job_id = %self.job.id, commit, "could not commit job results; retrying");
        let mut outcomes = batch.outcomes;
        outcomes.append(&mut self.pending);
        self.pending = outcomes;
        self.flush_scheduled = Some(RETRY_DELAY_MS);
        self.out.push(Effect::ScheduleFlush {
            after_ms: RETRY_DELAY_MS,
        });
    }

    /// Every target terminal and committed, nothing left to write: the job's status goes out.
    pub(super) fn maybe_finish(&mut self) {
        if self.phase != Phase::Active
            || self.committing.is_some()
            || !self.pending.is_empty()
            || !self.progress.is_empty()
            // Every terminal outcome decided here went through a commit, so with nothing pending
            // or committing, terminal means committed.
            || self.counts.finished() != self.targets.len() as i64
        {
            return;
        }
        self.phase = Phase::Finishing;
        self.out.push(Effect::FinishJob(self.status()));
    }

    fn status(&self) -> JobStatus {
        if self.cancelled {
            JobStatus::Cancelled
        } else {
            JobStatus::Completed
        }
    }

    pub(super) fn finish_recorded(&mut self, recorded: bool) {
        if self.phase != Phase::Finishing {
            return;
        }
        let status = self.status();
        if recorded {
            info!(job_id = %self.job.id, status = status.as_str(), "job finished");
            self.publish_update(None, status.as_str());
        } else {
            // The job stays active in the database and resumes at the next start.
            warn!(job_id = %self.job.id, "could not mark job finished");
        }
        self.phase = Phase::Retiring;
        self.out.push(Effect::Retire);
    }
}
