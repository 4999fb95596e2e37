//! Jobs: the operations (create, cancel, and the queries) the API and the CLI call, and the job
//! engine: the I/O-free state machine of a job's targets ([`machine`]), one supervised actor per
//! active job driving it, and the supervisor that routes agent messages to them. The job types
//! themselves are one list, [`JobType`] in `reap3r-wire`.

mod actor;
mod cancel;
mod create;
mod engine;
pub mod machine;
mod payload;
mod queries;
mod supervisor;

use ractor::ActorRef;
use reap3r_store::Uuid;
use reap3r_wire::{JobAckOutcome, JobOutput, JobResult};

pub use actor::{JobActor, JobMsg};
pub use cancel::CancelJob;
pub use create::{
    CreateJob, JobSecrets, JobTargetChoice, MAX_JOB_AGENT_IDS, MAX_JOB_TAG_IDS, MAX_JOB_TARGETS,
    MAX_JOB_TIMEOUT_S, SecretUse,
};
pub use engine::JobEngine;
pub use payload::{
    MAX_POWER_DELAY_S, MAX_SCRIPT_ARG_BYTES, MAX_SCRIPT_ARGS, MAX_SERVICE_NAME_BYTES,
};
pub use queries::{
    DEFAULT_JOB_PAGE, GetJob, GetJobResult, GetJobStats, JobDetail, JobPage, JobResultPage,
    ListJobResults, ListJobs, MAX_JOB_CURSOR_CHARS, MAX_JOB_LIST_PAGE, MAX_JOB_RESULT_PAGE,
};
pub use reap3r_wire::{JobType, MAX_SCRIPT_BYTES};
pub use supervisor::{JobSupervisor, JobSupervisorArgs, JobSupervisorMsg};

use crate::slot::ActorSlot;

/// What an agent said about one of its jobs, already verified by its session.
#[derive(Debug)]
pub enum AgentJobEvent {
    Ack(JobAckOutcome),
    Started { at_ms: u64 },
    Output(JobOutput),
    Result(Box<JobResult>),
}

/// How sessions and the API reach the job supervisor, which starts after the context is built
/// and is started again by the root supervisor if it crashes.
#[derive(Clone, Default, Debug)]
pub struct JobRouter(ActorSlot<JobSupervisorMsg>);

impl JobRouter {
    pub fn set(&self, supervisor: ActorRef<JobSupervisorMsg>) {
        self.0.set(supervisor);
    }

    pub fn get(&self) -> Option<ActorRef<JobSupervisorMsg>> {
        self.0.get()
    }

    /// An agent completed its hello on this node: its pending jobs can go out.
    pub fn agent_online(&self, agent_id: Uuid) {
        if let Some(s) = self.get() {
            let _ = s.cast(JobSupervisorMsg::AgentOnline(agent_id));
        }
    }

    /// A verified job message from an agent. Acks go to the agent's current session through
    /// the agent router, not to the session the message arrived on: it may have been replaced
    /// by the time the result commits.
    pub fn from_agent(&self, agent_id: Uuid, job_id: Uuid, event: AgentJobEvent) -> bool {
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
