//! Sending the job out: to every target at start, to an agent that comes online (again, for a
//! target already dispatched: its stream died with the old connection and the agent's ledger
//! answers `Duplicate`), and to queued targets as batch slots free up. A target moves to
//! `dispatched` only once the router delivered it; an undelivered queued target stays queued
//! and its agent is skipped by refills until it comes online.

use reap3r_store::{TargetState, Uuid};
use reap3r_wire::JobDispatch;

use super::{Effect, JobMachine, timeout_ms};

impl JobMachine {
    /// Targets holding a batch slot: in flight, or being offered.
    fn in_flight(&self) -> i64 {
        self.counts.in_flight() + self.offers
    }

    fn batch_full(&self) -> bool {
        self.job
            .batch_size
            .is_some_and(|b| self.in_flight() >= b.max(1))
    }

    /// Offers the job to every target that still has it to do (start, resume).
    pub(super) fn offer_all(&mut self) {
        let ids: Vec<Uuid> = self.targets.keys().copied().collect();
        for agent_id in ids {
            self.offer(agent_id);
        }
    }

    pub(super) fn agent_online(&mut self, agent_id: Uuid) {
        self.unreachable.remove(&agent_id);
        if self.cancelled {
            // Running on the agent, perhaps: tell it again on its new connection.
            if self
                .targets
                .get(&agent_id)
                .is_some_and(|t| !t.state.is_terminal() && t.state != TargetState::Queued)
            {
                self.out.push(Effect::SendCancel { agent_id });
            }
            return;
        }
        self.offer(agent_id);
    }

    /// Sends the job to `agent_id` if it still has it to do and, when queued, a batch slot is
    /// free. Its state moves when the delivery is answered.
    fn offer(&mut self, agent_id: Uuid) {
        if self.cancelled || self.phase != super::Phase::Active || self.draining.is_some() {
            return;
        }
        let full = self.batch_full();
        let Some(target) = self.targets.get_mut(&agent_id) else {
            return;
        };
        if target.state.is_terminal() || target.offered {
            return;
        }
        if target.state == TargetState::Queued {
            if full {
                return;
            }
            target.offered = true;
            self.offers += 1;
        }
        let dispatch = JobDispatch {
            spec: self.spec.clone(),
            grant: target.signed.grant.clone(),
            signature: target.signed.signature.clone(),
            sealed: target.signed.sealed.clone(),
        };
        self.out.push(Effect::Dispatch {
            agent_id,
            dispatch: Box::new(dispatch),
        });
    }

    pub(super) fn delivery(&mut self, agent_id: Uuid, delivered: bool, now: u64) {
        let Some(target) = self.targets.get_mut(&agent_id) else {
            return;
        };
        let was_offered = std::mem::take(&mut target.offered);
        if was_offered {
            self.offers -= 1;
        }
        if !delivered {
            self.unreachable.insert(agent_id);
            if was_offered {
                // The slot it held goes to the next queued target.
                self.refill();
            }
            return;
        }
        self.unreachable.remove(&agent_id);
        if was_offered && target.state == TargetState::Queued {
            target.deadline = Some(now + timeout_ms(&self.job) + self.grace_ms);
            self.set_state(agent_id, TargetState::Dispatched, now);
        }
    }

    /// Offers queued targets of reachable agents until the batch is full (after results free
    /// slots, or an offer was not delivered).
    pub(super) fn refill(&mut self) {
        if self.job.batch_size.is_none() || self.cancelled {
            return;
        }
        let queued: Vec<Uuid> = self
            .targets
            .iter()
            .filter(|(a, t)| {
                t.state == TargetState::Queued && !t.offered && !self.unreachable.contains(a)
            })
            .map(|(a, _)| *a)
            .collect();
        for agent_id in queued {
            if self.batch_full() {
                break;
            }
            self.offer(agent_id);
        }
    }
}
