//! The job operations' handle on the running job engine: the supervisor that starts and
//! cancels job actors, the server key that signs grants, and the engine's counters.

use std::sync::Arc;
use std::time::Duration;

use reap3r_store::Uuid;
use reap3r_wire::SigningKey;

use super::actor::Preloaded;
use super::{JobRouter, JobSupervisorMsg};
use crate::error::{DomainError, DomainResult};
use crate::{FleetContext, FleetStats};

/// How long an operation waits for the supervisor to answer.
const SUPERVISOR_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the job operations need of a node's job engine. Cheap to clone.
#[derive(Clone)]
pub struct JobEngine {
    ctx: FleetContext,
}

impl std::fmt::Debug for JobEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobEngine")
    }
}

impl JobEngine {
    pub fn new(ctx: FleetContext) -> Self {
        Self { ctx }
    }

    fn router(&self) -> &JobRouter {
        &self.ctx.jobs
    }

    /// `Unavailable` while the supervisor is not running on this node.
    pub(super) fn running(&self) -> DomainResult<()> {
        match self.router().get() {
            Some(_) => Ok(()),
            None => Err(DomainError::unavailable(
                "the job engine is not running on this node",
            )),
        }
    }

    pub(super) fn server_key(&self) -> Arc<SigningKey> {
        self.ctx.server_key.clone()
    }

    /// Counts a created job.
    pub(super) fn job_created(&self) {
        FleetStats::bump(&self.ctx.stats.jobs_created);
    }

    /// Starts the actor of a job just committed. The job is durable: if the actor cannot start
    /// here, it resumes at the next start of the node.
    pub(super) fn start(&self, job_id: Uuid, preloaded: Option<Box<Preloaded>>) {
        if let Some(supervisor) = self.router().get() {
            let _ = supervisor.cast(JobSupervisorMsg::Start(job_id, preloaded));
        }
    }

    /// Tells a job's actor that it was cancelled; with no live actor, starts one, which sees
    /// `cancel_requested_at` when it loads.
    pub(super) async fn cancel(&self, job_id: Uuid) {
        let Some(supervisor) = self.router().get() else {
            return;
        };
        let taken = supervisor
            .call(
                |r| JobSupervisorMsg::Cancel(job_id, r),
                Some(SUPERVISOR_CALL_TIMEOUT),
            )
            .await;
        if !matches!(taken, Ok(ractor::rpc::CallResult::Success(true))) {
            let _ = supervisor.cast(JobSupervisorMsg::Start(job_id, None));
        }
    }

    /// Number of live job actors (tests and metrics).
    pub async fn live_jobs(&self) -> usize {
        let Some(supervisor) = self.router().get() else {
            return 0;
        };
        match supervisor
            .call(JobSupervisorMsg::Count, Some(SUPERVISOR_CALL_TIMEOUT))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(n)) => n,
            _ => 0,
        }
    }
}
