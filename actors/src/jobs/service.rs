//! Creating and cancelling jobs: validation, target resolution, capability checks, signing one
//! grant per target with the server key, one transaction, then the job actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reap3r_store::{Job, JobTargetSelector, NewJob, NewJobTarget, StoreError, TargetCounts, Uuid};
use reap3r_wire::{
    INTERPRETERS, JobGrant, JobPayload, JobSpec, MAX_JOB_TIMEOUT_S, MAX_SCRIPT_BYTES, SigningKey,
};

use super::actor::Preloaded;
use super::{JobRouter, JobSupervisorMsg};
use crate::{FleetContext, FleetEvent, FleetStats};

/// Most agents one job may target.
pub const MAX_JOB_TARGETS: usize = 100_000;
/// Most script arguments and environment variables, and the longest of each.
const MAX_ARGS: usize = 64;
const MAX_ARG_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Invalid(String),
    #[error("no agent matches the job's targets")]
    NoTargets,
    #[error("{count} targeted agent(s) cannot run this job (missing {need}): {agents}")]
    Unsupported {
        need: String,
        count: usize,
        agents: String,
    },
    #[error("job not found")]
    NotFound,
    #[error("job has already finished")]
    Finished,
    #[error("the job engine is not running on this node")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A job as the API asks for it, already parsed.
#[derive(Debug, Clone)]
pub struct NewJobRequest {
    pub org_id: Uuid,
    pub created_by: String,
    pub payload: JobPayload,
    /// The payload as the caller sent it, stored for display.
    pub payload_json: serde_json::Value,
    pub targets: JobTargetSelector,
    pub timeout_s: u32,
    pub expires_at: Option<i64>,
    pub batch_size: Option<u32>,
}

/// The API's handle on the job engine.
#[derive(Clone)]
pub struct JobService {
    ctx: FleetContext,
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobService")
    }
}

impl JobService {
    pub fn new(ctx: FleetContext) -> Self {
        Self { ctx }
    }

    fn router(&self) -> &JobRouter {
        &self.ctx.jobs
    }

    /// Validates, resolves targets, checks capabilities, signs and stores the job, and starts
    /// its actor. Returns the stored job.
    pub async fn create(&self, req: NewJobRequest) -> Result<Job, JobError> {
        let supervisor = self.router().get().ok_or(JobError::Unavailable)?;
        let now = self.ctx.clock.now_ms();
        validate(&req, now)?;
        let agents = self
            .ctx
            .store
            .resolve_job_targets(req.org_id, &req.targets)
            .await
            .map_err(|e| match e {
                StoreError::Invalid(msg) => JobError::Invalid(msg),
                other => JobError::Store(other),
            })?;
        if agents.is_empty() {
            return Err(JobError::NoTargets);
        }
        if agents.len() > MAX_JOB_TARGETS {
            return Err(JobError::Invalid(format!(
                "a job may target at most {MAX_JOB_TARGETS} agents"
            )));
        }
        check_capabilities(&req.payload, &agents)?;

        let job_id = Uuid::now_v7();
        let spec = JobSpec {
            timeout_s: req.timeout_s,
            payload: req.payload.clone(),
        }
        .to_bytes();
        let spec_hash = JobSpec::hash_bytes(&spec);
        let key = self.ctx.server_key.clone();
        let expires = req.expires_at.map(|e| e.max(0) as u64);
        let ids: Vec<Uuid> = agents.iter().map(|(id, _, _)| *id).collect();
        // Thousands of signatures: off the async workers.
        let grants = tokio::task::spawn_blocking(move || {
            sign_grants(&key, job_id, &ids, spec_hash, now, expires)
        })
        .await
        .map_err(|e| JobError::Invalid(format!("signing failed: {e}")))?;

        let new_job = NewJob {
            id: job_id,
            org_id: req.org_id,
            job_type: req.payload.type_name().into(),
            payload: req.payload_json.clone(),
            spec_hex: hex::encode(&spec),
            targets: serde_json::to_value(&req.targets).unwrap_or_default(),
            created_by: req.created_by.clone(),
            timeout_s: i64::from(req.timeout_s),
            expires_at: req.expires_at,
            batch_size: req.batch_size.map(i64::from),
        };
        let rows: Vec<NewJobTarget> = grants
            .iter()
            .map(|(agent_id, (grant, sig))| NewJobTarget {
                agent_id: *agent_id,
                grant_hex: hex::encode(grant),
                signature_hex: hex::encode(sig),
            })
            .collect();
        let job = self
            .ctx
            .store
            .create_job(&new_job, &rows, now as i64)
            .await?;
        FleetStats::bump(&self.ctx.stats.jobs_created);
        let counts = TargetCounts {
            queued: job.total_targets,
            ..Default::default()
        };
        self.ctx.events.publish(FleetEvent::JobUpdate {
            job_id: job.id,
            org_id: job.org_id,
            agent_id: None,
            state: "created".into(),
            counts,
        });
        let preloaded = Preloaded {
            job: job.clone(),
            grants: grants.into_iter().collect(),
        };
        // The job is durable now; if the actor cannot start here it resumes at the next start.
        let _ = supervisor.cast(JobSupervisorMsg::Start(job.id, Some(Box::new(preloaded))));
        Ok(job)
    }

    /// Records the cancel and tells the job's actor. Finished jobs cannot be cancelled.
    pub async fn cancel(&self, org_id: Uuid, job_id: Uuid) -> Result<Job, JobError> {
        let now = self.ctx.clock.now_ms() as i64;
        let job = self
            .ctx
            .store
            .request_job_cancel(org_id, job_id, now)
            .await?
            .ok_or(JobError::NotFound)?;
        if job.status != reap3r_store::JobStatus::Active {
            return Err(JobError::Finished);
        }
        if let Some(supervisor) = self.router().get() {
            let taken = supervisor
                .call(
                    |r| JobSupervisorMsg::Cancel(job_id, r),
                    Some(Duration::from_secs(5)),
                )
                .await;
            if !matches!(taken, Ok(ractor::rpc::CallResult::Success(true))) {
                // No live actor: it will see cancel_requested_at when it (re)starts.
                let _ = supervisor.cast(JobSupervisorMsg::Start(job_id, None));
            }
        }
        Ok(job)
    }

    /// Number of live job actors (tests and metrics).
    pub async fn live_jobs(&self) -> usize {
        let Some(supervisor) = self.router().get() else {
            return 0;
        };
        match supervisor
            .call(JobSupervisorMsg::Count, Some(Duration::from_secs(5)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(n)) => n,
            _ => 0,
        }
    }
}

fn sign_grants(
    key: &Arc<SigningKey>,
    job_id: Uuid,
    agents: &[Uuid],
    spec_hash: [u8; 32],
    now: u64,
    expires_at_ms: Option<u64>,
) -> HashMap<Uuid, (Vec<u8>, Vec<u8>)> {
    agents
        .iter()
        .map(|agent_id| {
            let grant = JobGrant {
                job_id: job_id.into_bytes(),
                agent_id: agent_id.into_bytes(),
                spec_hash,
                issued_at_ms: now,
                expires_at_ms,
            };
            let (bytes, sig) = grant.sign(key);
            (*agent_id, (bytes, sig.to_vec()))
        })
        .collect()
}

fn invalid(msg: impl Into<String>) -> JobError {
    JobError::Invalid(msg.into())
}

/// Checks everything about the request that does not need the database.
fn validate(req: &NewJobRequest, now: u64) -> Result<(), JobError> {
    if req.timeout_s == 0 || req.timeout_s > MAX_JOB_TIMEOUT_S {
        return Err(invalid(format!(
            "timeout_s must be between 1 and {MAX_JOB_TIMEOUT_S}"
        )));
    }
    if let Some(e) = req.expires_at
        && e <= now as i64
    {
        return Err(invalid("expires_at must be in the future"));
    }
    if req.batch_size == Some(0) {
        return Err(invalid("batch_size must be at least 1"));
    }
    match &req.payload {
        JobPayload::RunScript(s) => {
            if !INTERPRETERS.contains(&s.interpreter.as_str()) {
                return Err(invalid(format!(
                    "interpreter must be one of {}",
                    INTERPRETERS.join(", ")
                )));
            }
            if s.script.is_empty() || s.script.len() > MAX_SCRIPT_BYTES {
                return Err(invalid(format!(
                    "script must be 1 to {MAX_SCRIPT_BYTES} bytes"
                )));
            }
            if s.args.len() > MAX_ARGS || s.env.len() > MAX_ARGS {
                return Err(invalid(format!("at most {MAX_ARGS} args and env entries")));
            }
            let too_long = s.args.iter().any(|a| a.len() > MAX_ARG_BYTES)
                || s.env.iter().any(|(k, v)| k.len() + v.len() > MAX_ARG_BYTES);
            if too_long {
                return Err(invalid(format!(
                    "each arg and env entry must be at most {MAX_ARG_BYTES} bytes"
                )));
            }
            let bad_key = s
                .env
                .iter()
                .any(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'));
            if bad_key || s.args.iter().any(|a| a.contains('\0')) {
                return Err(invalid(
                    "env names must be non-empty without '=' and no value may contain NUL",
                ));
            }
            if let Some(dir) = &s.working_dir
                && (dir.is_empty() || dir.len() > MAX_ARG_BYTES || dir.contains('\0'))
            {
                return Err(invalid("working_dir is empty, too long or has NUL"));
            }
        }
        JobPayload::ProcessKill { pid } if *pid <= 1 => {
            return Err(invalid("pid must be greater than 1"));
        }
        JobPayload::ServiceAction { service, .. } => {
            let ok = !service.is_empty()
                && service.len() <= 255
                && service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@._:-".contains(c));
            if !ok {
                return Err(invalid(
                    "service must be a systemd unit name ([A-Za-z0-9@._:-], at most 255)",
                ));
            }
        }
        JobPayload::Reboot { delay_s } | JobPayload::Shutdown { delay_s } if *delay_s > 86_400 => {
            return Err(invalid("delay_s must be at most 86400"));
        }
        _ => {}
    }
    Ok(())
}

/// Every target must report `job:<type>` (and for scripts `interpreter:<name>`).
fn check_capabilities(
    payload: &JobPayload,
    agents: &[(Uuid, Vec<String>, String)],
) -> Result<(), JobError> {
    let mut need = vec![format!("job:{}", payload.type_name())];
    if let JobPayload::RunScript(s) = payload {
        need.push(format!("interpreter:{}", s.interpreter));
    }
    let lacking: Vec<String> = agents
        .iter()
        .filter(|(_, caps, _)| !need.iter().all(|n| caps.iter().any(|c| c == n)))
        .map(|(id, _, host)| format!("{host} ({id})"))
        .collect();
    if lacking.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = lacking.iter().take(10).cloned().collect();
    let more = if lacking.len() > 10 {
        format!(" and {} more", lacking.len() - 10)
    } else {
        String::new()
    };
    Err(JobError::Unsupported {
        need: need.join(" and "),
        count: lacking.len(),
        agents: format!("{}{more}", shown.join(", ")),
    })
}
