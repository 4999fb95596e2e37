//! Decisions the server takes on its own: a queued target still queued at the job's
//! `expires_at` is `expired`; a target with no result by its deadline (`timeout_s` + grace after
//! its dispatch) is `timed_out`, or `cancelled` once the job is cancelled. A cancel decides
//! queued targets at once and gives the others a grace to confirm after a `JobCancel`.

use reap3r_store::{TargetState, Uuid};
use tracing::info;

use super::{Effect, JobMachine, target};

impl JobMachine {
    pub(super) fn tick(&mut self, now: u64) {
        if self.phase != super::Phase::Active {
            return;
        }
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
            let outcome = target::server_outcome(self.job.id, agent_id, state, why.into(), now);
            self.conclude(agent_id, outcome, false);
        }
    }

    /// Queued targets are cancelled at once; the others get `JobCancel` and a grace to confirm.
    pub(super) fn cancel(&mut self, now: u64) {
        let first = !self.cancelled;
        self.cancelled = true;
        let deadline = now + self.grace_ms;
        let ids: Vec<Uuid> = self.targets.keys().copied().collect();
        for agent_id in ids {
            let Some(t) = self.targets.get_mut(&agent_id) else {
                continue;
            };
            match t.state {
                TargetState::Queued => {
                    let outcome = target::server_outcome(
                        self.job.id,
                        agent_id,
                        TargetState::Cancelled,
                        "cancelled before it was dispatched".into(),
                        now,
                    );
                    self.conclude(agent_id, outcome, false);
                }
                s if !s.is_terminal() => {
                    t.deadline = Some(t.deadline.map_or(deadline, |d| d.min(deadline)));
                    self.out.push(Effect::SendCancel { agent_id });
                }
                _ => {}
            }
        }
        if first {
            info!(job_id = %self.job.id, "job cancelled");
            self.publish_update(None, "cancelling");
        }
    }
}
