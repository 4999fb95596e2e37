//! The job engine: the I/O-free state machine of a job's targets ([`machine`]), one supervised
//! actor per active job driving it, the supervisor that routes agent messages to them, and the
//! service the API uses to create and cancel jobs.

mod actor;
pub mod machine;
mod service;
mod supervisor;

use std::sync::{Arc, OnceLock};

use ractor::ActorRef;
use reap3r_store::Uuid;
use reap3r_wire::{JobAckOutcome, JobOutput, JobResult};

pub use actor::{JobActor, JobMsg};
pub use service::{JobError, JobService, NewJobRequest};
pub use supervisor::{JobSupervisor, JobSupervisorArgs, JobSupervisorMsg};

use crate::SessionMsg;

/// What an agent said about one of its jobs, already verified by its session.
#[derive(Debug)]
pub enum AgentJobEvent {
    Ack(JobAckOutcome),
    Started { at_ms: u64 },
    Output(JobOutput),
    Result(Box<JobResult>),
}

/// How sessions and the API reach the job supervisor, which starts after the context is built.
#[derive(Clone, Default)]
pub struct JobRouter(Arc<OnceLock<ActorRef<JobSupervisorMsg>>>);

impl std::fmt::Debug for JobRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobRouter(set: {})", self.0.get().is_some())
    }
}

impl JobRouter {
    pub fn set(&self, supervisor: ActorRef<JobSupervisorMsg>) {
        let _ = self.0.set(supervisor);
    }

    pub fn get(&self) -> Option<&ActorRef<JobSupervisorMsg>> {
        self.0.get()
    }

    /// An agent completed its hello on this node: its pending jobs can go out.
    pub fn agent_online(&self, agent_id: Uuid) {
        if let Some(s) = self.get() {
            let _ = s.cast(JobSupervisorMsg::AgentOnline(agent_id));
        }
    }

    /// A verified job message from an agent. Acks go to the agent's current session through
    /// the agent router, not to the session the message arrived on (it may have been replaced
    /// by the time the result commits), so `_session` is unused; it goes when the session's
    /// call site changes.
    pub fn from_agent(
        &self,
        agent_id: Uuid,
        job_id: Uuid,
        event: AgentJobEvent,
        _session: ActorRef<SessionMsg>,
    ) -> bool {
        match self.get() {
            Some(s) => s
                .cast(JobSupervisorMsg::FromAgent {
                    agent_id,
                    job_id,
                    event,
                })
                .is_ok(),
            None => false,
        }
    }
}
