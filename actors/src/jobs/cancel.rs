//! Cancelling a job: the cancel request and its `job.cancel` audit record in one transaction,
//! then the job's actor is told (queued agents never get the job, running ones kill it).

use reap3r_store::{JobStatus, Uuid};
use serde_json::json;

use super::create::job_target;
use super::engine::JobEngine;
use super::queries::JobDetail;
use crate::access::Caller;
use crate::audit;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};

/// Cancel a job of the caller's organisation. Finished jobs cannot be cancelled.
#[derive(Debug, Clone)]
pub struct CancelJob {
    pub job_id: Uuid,
}

impl CancelJob {
    /// Returns the job as it now is (its status changes when its actor finishes it), with its
    /// per-state counts.
    pub async fn run(
        self,
        domain: &Domain,
        engine: &JobEngine,
        caller: &Caller,
    ) -> DomainResult<JobDetail> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let job = tx
            .request_job_cancel(caller.org_id, self.job_id, now)
            .await?
            .ok_or(DomainError::NotFound("job"))?;
        if job.status != JobStatus::Active {
            return Err(DomainError::conflict("job has already finished"));
        }
        audit::record(
            &mut tx,
            caller,
            "job.cancel",
            Some(job_target(job.id)),
            json!({ "type": job.job_type }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        engine.cancel(job.id).await;
        let counts = domain.store.job_target_counts(job.id).await?;
        Ok(JobDetail { job, counts })
    }
}
