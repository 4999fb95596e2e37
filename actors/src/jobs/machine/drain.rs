//! Draining at shutdown: nothing new goes out, results already on their way are waited for and
//! committed, and the driver is told once the job holds nothing the node could still save.
//!
//! "On their way" means a target the agent has (dispatched, acked or running) whose agent is
//! connected to this node: its result can still arrive over the live session and be acked
//! before the sessions close. Targets of disconnected agents are not waited for; their agents
//! replay the result after the restart. The grace period bounds the wait in the driver.

use std::collections::BTreeSet;

use reap3r_store::{TargetState, Uuid};

use super::{Effect, JobMachine};

impl JobMachine {
    pub(super) fn drain(&mut self, live: BTreeSet<Uuid>) {
        self.draining = Some(live);
        self.drained = false;
        // Whatever is pending goes out now rather than after the flush delay.
        self.flush();
    }

    /// Whether a target's result could still arrive over a live session.
    fn awaited(&self, agent_id: &Uuid, state: TargetState) -> bool {
        matches!(
            state,
            TargetState::Dispatched | TargetState::Acked | TargetState::Running
        ) && self
            .draining
            .as_ref()
            .is_some_and(|live| live.contains(agent_id))
    }

    /// After every input while draining: answers [`Effect::Drained`] once nothing awaited is
    /// left and everything received is committed.
    pub(super) fn check_drained(&mut self) {
        if self.draining.is_none() || self.drained {
            return;
        }
        let waiting = self
            .targets
            .iter()
            .any(|(agent_id, t)| self.awaited(agent_id, t.state));
        if waiting {
            return;
        }
        if !self.pending.is_empty() && self.committing.is_none() {
            self.flush();
        }
        if self.pending.is_empty() && self.committing.is_none() && self.progress.is_empty() {
            self.drained = true;
            self.out.push(Effect::Drained);
        }
    }
}
