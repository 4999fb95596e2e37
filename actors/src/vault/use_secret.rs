//! `POST /api/vault/{id}/use`: run a script on agents with one secret in its environment, the
//! shortcut a technician takes from the secret's page. It is a `run_script` job like any other
//! (same permissions, grant checks, sealing to each target and audit), built here and created
//! through [`JobWithSecrets`].

use reap3r_store::{Job, Uuid};
use reap3r_wire::JobType;
use serde_json::json;

use super::jobs::{JobWithSecrets, SecretEnv};
use crate::Domain;
use crate::access::{Caller, Origin};
use crate::error::DomainResult;
use crate::jobs::{CreateJob, JobEngine, JobTargetChoice};

/// A script run with one secret as the environment variable `env`.
#[derive(Debug, Clone)]
pub struct UseSecret {
    pub secret_id: Uuid,
    pub env: String,
    pub targets: JobTargetChoice,
    /// `sh`, `bash`, `python3` or `pwsh`.
    pub interpreter: String,
    pub script: String,
    pub args: Vec<String>,
    pub timeout_s: u32,
    pub origin: Origin,
}

impl UseSecret {
    /// Creates the job; the answer is the stored job, as `POST /api/jobs` answers.
    pub async fn run(
        self,
        domain: &Domain,
        engine: &JobEngine,
        caller: &Caller,
    ) -> DomainResult<Job> {
        JobWithSecrets {
            job: CreateJob {
                job_type: JobType::RunScript,
                targets: self.targets,
                payload: Some(json!({
                    "interpreter": self.interpreter,
                    "script": self.script,
                    "args": self.args,
                })),
                timeout_s: self.timeout_s,
                expires_at: None,
                batch_size: None,
                confirm: None,
                secrets: None,
            },
            secrets: vec![SecretEnv {
                env: self.env,
                secret_id: self.secret_id,
            }],
            origin: self.origin,
        }
        .run(domain, engine, caller)
        .await
    }
}
