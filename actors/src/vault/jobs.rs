//! Secrets in jobs: a `run_script` job names vault secrets to pass as environment variables.
//! The caller needs `secret:use` and each secret shared with them to use in jobs; each value is
//! opened here, in memory, and sealed (HPKE) to every target agent's own X25519 key, bound to
//! the job and the agent, so the job's rows, its audit record, the logs and the event stream
//! carry names only, and a dispatch replayed to another agent cannot be opened.

use std::collections::{HashMap, HashSet};

use reap3r_store::{Job, NewSecretAccess, Uuid};
use reap3r_wire::{
    MAX_SEALED_SECRETS, SealedEnv, SealedValue, rand_core, seal_value, valid_env_name,
};
use serde_json::json;

use super::access::{self, not_granted};
use super::data_key::DataKey;
use super::model::secret_target;
use crate::Domain;
use crate::access::Origin;
use crate::access::{Caller, Permission};
use crate::error::{DomainError, DomainResult};
use crate::jobs::{CreateJob, JobEngine, JobSecrets, SecretUse};

/// Most agents named in the error about agents without a sealing key.
const MAX_NAMED_AGENTS: usize = 10;

/// One environment variable a job's script gets from a secret (its current version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    pub env: String,
    pub secret_id: Uuid,
}

/// A job whose script gets vault secrets: `POST /api/jobs` with `secrets`, and
/// `POST /api/vault/{id}/use`. The secrets are sealed to the targets, then the job is created.
#[derive(Debug, Clone)]
pub struct JobWithSecrets {
    pub job: CreateJob,
    /// Empty: an ordinary job.
    pub secrets: Vec<SecretEnv>,
    pub origin: Origin,
}

impl JobWithSecrets {
    pub async fn run(
        self,
        domain: &Domain,
        engine: &JobEngine,
        caller: &Caller,
    ) -> DomainResult<Job> {
        let mut job = self.job;
        if !self.secrets.is_empty() {
            job.secrets =
                Some(seal_for_job(domain, caller, &job, &self.secrets, &self.origin).await?);
        }
        job.run(domain, engine, caller).await
    }
}

/// Seals `refs` for `job`'s targets: checks the caller may use each secret, opens the values,
/// seals them to each target agent and prepares the record of each use (access log and audit
/// chain, with the version's keyed hash), which `CreateJob` writes in the job's transaction.
/// The answer goes into `CreateJob::secrets`.
pub async fn seal_for_job(
    domain: &Domain,
    caller: &Caller,
    job: &CreateJob,
    refs: &[SecretEnv],
    origin: &Origin,
) -> DomainResult<JobSecrets> {
    caller.require(Permission::SecretUse)?;
    if refs.is_empty() || refs.len() > MAX_SEALED_SECRETS {
        return Err(DomainError::invalid(format!(
            "secrets: 1 to {MAX_SEALED_SECRETS} per job"
        )));
    }
    let mut seen = HashSet::new();
    for r in refs {
        if !valid_env_name(&r.env) {
            return Err(DomainError::invalid(format!(
                "secrets: {:?} is not an environment variable name",
                r.env
            )));
        }
        if !seen.insert(r.env.as_str()) {
            return Err(DomainError::invalid(format!(
                "secrets: {} is named twice",
                r.env
            )));
        }
    }
    // Every secret must be usable before anything is opened.
    let mut secrets = Vec::with_capacity(refs.len());
    for r in refs {
        let (secret, flags, _) = access::load(domain, caller, r.secret_id).await?;
        if !flags.use_in_jobs {
            return Err(not_granted("use it in jobs"));
        }
        secrets.push(secret);
    }
    let agents = job.target_agents(domain, caller).await?;
    let keys = domain.store.sealing_keys(caller.org_id, &agents).await?;
    let missing: Vec<String> = agents
        .iter()
        .filter(|a| !keys.contains_key(a))
        .take(MAX_NAMED_AGENTS)
        .map(Uuid::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(DomainError::bad_request(
            "agent_cannot_receive_secrets",
            format!(
                "these agents have no sealing key yet (an agent sends one when it connects): {}",
                missing.join(", ")
            ),
        ));
    }
    let job_id = Uuid::now_v7();
    let mut values = Vec::with_capacity(secrets.len());
    for secret in &secrets {
        let version = domain
            .store
            .secret_version(caller.org_id, secret.id, secret.current_version)
            .await?
            .ok_or(DomainError::NotFound("secret version"))?;
        let dek = DataKey::open(&domain.vault, secret)?;
        values.push((dek.open_value(&version)?, version));
    }
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let mut sealed = HashMap::with_capacity(agents.len());
    for agent in &agents {
        let Some(key) = keys.get(agent) else { continue };
        let mut entries: Vec<SealedValue> = Vec::with_capacity(refs.len());
        for (r, (value, _)) in refs.iter().zip(&values) {
            entries.push(
                seal_value(
                    key,
                    job_id.as_bytes(),
                    agent.as_bytes(),
                    &r.env,
                    value,
                    &mut rng,
                )
                .map_err(|e| DomainError::unavailable(format!("sealing failed: {e}")))?,
            );
        }
        let bytes = SealedEnv { entries }
            .to_bytes()
            .map_err(|e| DomainError::invalid(format!("secrets: {e}")))?;
        sealed.insert(*agent, bytes);
    }
    let uses = refs
        .iter()
        .zip(&secrets)
        .zip(&values)
        .map(|((r, secret), (_, version))| SecretUse {
            audit_target: secret_target(secret.id),
            audit_details: json!({
                "job_id": job_id,
                "env": r.env,
                "version": version.version,
                "value_mac": version.value_mac,
                "agents": agents.len(),
            }),
            access: NewSecretAccess {
                version: Some(version.version),
                reason: Some(format!("job {job_id} ({} agents)", agents.len())),
                ..access::entry(caller.actor(), secret, "use", origin)
            },
        })
        .collect();
    Ok(JobSecrets {
        job_id,
        names: refs.iter().map(|r| r.env.clone()).collect(),
        sealed,
        uses,
    })
}
