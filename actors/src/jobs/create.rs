//! Creating a job: the request's checks (the caller's per-type permission, confirmation,
//! payload, targets and limits), target resolution, capability checks, the secrets sealed to
//! each target if the job has any ([`JobSecrets`]), one signed grant per target (off the async
//! workers), then the job, its targets and its `job.create` audit record in one transaction;
//! the job's actor starts only once that has committed.

use std::collections::{BTreeSet, HashMap, HashSet};

use reap3r_store::{Job, JobTargetSelector, NewJob, NewJobTarget, TargetCounts, Uuid};
pub use reap3r_wire::MAX_JOB_TIMEOUT_S;
use reap3r_wire::{
    HEADER_LEN, JobGrant, JobPayload, JobSpec, JobType, MAX_FRAME_LEN, MAX_SEALED_SECRETS,
    SIGNATURE_LEN, SealedEnv, SigningKey, valid_env_name,
};
use serde_json::json;

use super::actor::Preloaded;
use super::engine::JobEngine;
use super::machine::SignedTarget;
use super::payload;
use crate::FleetEvent;
use crate::access::{Caller, Permission};
use crate::audit;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};

/// Most agents one job may target, however they are selected; also the largest batch size.
pub const MAX_JOB_TARGETS: usize = 100_000;
/// Most agent ids a request may list (`targets.agent_ids`).
pub const MAX_JOB_AGENT_IDS: usize = 10_000;
/// Most tag ids a request may list (`targets.tag_ids`).
pub const MAX_JOB_TAG_IDS: usize = 100;
/// How many agents lacking a capability an error names.
const MAX_NAMED_AGENTS: usize = 10;
/// What a dispatch envelope holds besides the spec and the sealed env: its header and
/// signature, plus the kind, the length prefixes, the grant and its signature (under 300
/// bytes, rounded up).
const DISPATCH_OVERHEAD: usize = HEADER_LEN + SIGNATURE_LEN + 400;

/// Which agents run the job, as the caller sent it: exactly one of the fields.
#[derive(Debug, Clone, Default)]
pub struct JobTargetChoice {
    pub agent_ids: Option<Vec<Uuid>>,
    pub tag_ids: Option<Vec<Uuid>>,
    pub folder_id: Option<Uuid>,
    pub all: Option<bool>,
}

impl JobTargetChoice {
    fn selector(self) -> DomainResult<JobTargetSelector> {
        let mut chosen = Vec::new();
        if let Some(ids) = self.agent_ids {
            if ids.is_empty() || ids.len() > MAX_JOB_AGENT_IDS {
                return Err(DomainError::invalid(format!(
                    "targets.agent_ids must list 1 to {MAX_JOB_AGENT_IDS} agents"
                )));
            }
            chosen.push(JobTargetSelector::Agents(ids));
        }
        if let Some(ids) = self.tag_ids {
            if ids.is_empty() || ids.len() > MAX_JOB_TAG_IDS {
                return Err(DomainError::invalid(format!(
                    "targets.tag_ids must list 1 to {MAX_JOB_TAG_IDS} tags"
                )));
            }
            chosen.push(JobTargetSelector::Tags(ids));
        }
        if let Some(id) = self.folder_id {
            chosen.push(JobTargetSelector::Folder(id));
        }
        if self.all == Some(true) {
            chosen.push(JobTargetSelector::All);
        }
        match chosen.len() {
            1 => Ok(chosen.remove(0)),
            _ => Err(DomainError::invalid(
                "targets must name exactly one of agent_ids, tag_ids, folder_id or all: true",
            )),
        }
    }
}

/// The secrets a `run_script` job's script gets as environment variables, sealed to each target
/// agent's X25519 key (`reap3r_wire::seal_value`; the keys come from
/// `Store::sealing_keys`). The vault fills this in; the API's payload cannot name secrets.
#[derive(Clone, Default)]
pub struct JobSecrets {
    /// The id the job gets. Each value was sealed for it (its associated data names the job),
    /// so it is chosen before sealing, as `Uuid::now_v7()`; an id already taken is `Conflict`.
    pub job_id: Uuid,
    /// The variables' names: the spec's `secret_env`. 1 to `MAX_SEALED_SECRETS`, each
    /// `valid_env_name`, none twice, none also in the payload's `env`.
    pub names: Vec<String>,
    /// Per target agent: its `SealedEnv::to_bytes()`, holding exactly `names`. Every agent the
    /// targets resolve to needs one (resolve them first with [`CreateJob::target_agents`]), and
    /// no other agent may have one. Its BLAKE3 goes into that agent's signed grant.
    pub sealed: HashMap<Uuid, Vec<u8>>,
    /// What the vault records of each secret's use (audit and access log), written in the
    /// job's own transaction: a job refused after sealing leaves no record of a use.
    pub uses: Vec<SecretUse>,
}

/// One secret's use by a job, recorded with the job: its `secret.use` audit record (a keyed
/// hash of the value, never the value) and its access-log row.
#[derive(Debug, Clone)]
pub struct SecretUse {
    pub audit_target: String,
    pub audit_details: serde_json::Value,
    pub access: reap3r_store::NewSecretAccess,
}

impl std::fmt::Debug for JobSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and sizes: the sealed bytes say nothing to a reader of logs.
        f.debug_struct("JobSecrets")
            .field("job_id", &self.job_id)
            .field("names", &self.names)
            .field("sealed_targets", &self.sealed.len())
            .field("uses", &self.uses.len())
            .finish()
    }
}

/// A new job, as the caller asks for it.
#[derive(Debug, Clone)]
pub struct CreateJob {
    pub job_type: JobType,
    pub targets: JobTargetChoice,
    /// The type's payload, a JSON object; `None` is `{}`.
    pub payload: Option<serde_json::Value>,
    /// 1 to [`MAX_JOB_TIMEOUT_S`].
    pub timeout_s: u32,
    /// Unix ms after which agents that have not received the job no longer get it.
    pub expires_at: Option<i64>,
    /// 1 to [`MAX_JOB_TARGETS`].
    pub batch_size: Option<u32>,
    /// Must be `true` for the types that [need it](JobType::needs_confirmation).
    pub confirm: Option<bool>,
    /// Secrets sealed to each target, for a `run_script` job; `None` for a job without.
    pub secrets: Option<JobSecrets>,
}

impl CreateJob {
    /// The agents of the caller's org the job's targets resolve to right now, by the same rules
    /// [`run`](Self::run) applies: what the vault seals secrets to before it runs the job.
    pub async fn target_agents(&self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<Uuid>> {
        let selector = self.targets.clone().selector()?;
        let agents = domain
            .store
            .resolve_job_targets(caller.org_id, &selector)
            .await?;
        Ok(agents.into_iter().map(|(id, _, _)| id).collect())
    }

    /// Checks, resolves, signs and stores the job with its audit record, then starts its actor.
    /// Returns the stored job.
    pub async fn run(
        mut self,
        domain: &Domain,
        engine: &JobEngine,
        caller: &Caller,
    ) -> DomainResult<Job> {
        caller.require(Permission::RunJob(self.job_type))?;
        if self.job_type.needs_confirmation() && self.confirm != Some(true) {
            return Err(DomainError::bad_request(
                "confirmation_required",
                "reboot and shutdown jobs need \"confirm\": true",
            ));
        }
        let raw = self.payload.clone().unwrap_or_else(|| json!({}));
        if !raw.is_object() {
            return Err(DomainError::invalid("payload must be a JSON object"));
        }
        let mut job_payload = payload::parse_payload(self.job_type, &raw)?;
        let selector = self.targets.clone().selector()?;
        engine.running()?;
        let now = domain.now_ms();
        self.check_limits(now)?;
        payload::check(&job_payload)?;
        let secrets = self.secrets.take();
        if let Some(secrets) = &secrets {
            check_secret_names(&mut job_payload, &secrets.names)?;
        }

        let agents = domain
            .store
            .resolve_job_targets(caller.org_id, &selector)
            .await?;
        if agents.is_empty() {
            return Err(DomainError::bad_request(
                "no_targets",
                "no agent matches the job's targets",
            ));
        }
        if agents.len() > MAX_JOB_TARGETS {
            return Err(DomainError::invalid(format!(
                "a job may target at most {MAX_JOB_TARGETS} agents"
            )));
        }
        check_capabilities(&job_payload, &agents)?;
        let ids: Vec<Uuid> = agents.iter().map(|(id, _, _)| *id).collect();
        let (job_id, mut sealed, uses) = match secrets {
            Some(s) => {
                check_sealed(&s, &ids)?;
                (s.job_id, s.sealed, s.uses)
            }
            None => (Uuid::now_v7(), HashMap::new(), Vec::new()),
        };
        let secret_names: Vec<String> = match &job_payload {
            JobPayload::RunScript(s) => s.secret_env.clone(),
            _ => Vec::new(),
        };

        let spec = JobSpec {
            timeout_s: self.timeout_s,
            payload: job_payload,
        }
        .to_bytes();
        let largest_sealed = sealed.values().map(Vec::len).max().unwrap_or(0);
        if spec.len() + largest_sealed + DISPATCH_OVERHEAD > MAX_FRAME_LEN {
            return Err(DomainError::invalid(format!(
                "the job's spec ({} bytes) and sealed secrets ({largest_sealed} bytes) do not \
                 fit in one dispatch of at most {MAX_FRAME_LEN} bytes",
                spec.len()
            )));
        }
        let spec_hash = JobSpec::hash_bytes(&spec);
        let key = engine.server_key();
        let issued_at = u64::try_from(now).unwrap_or_default();
        let expires = self.expires_at.map(|e| e.max(0) as u64);
        let sealed_hashes: HashMap<Uuid, [u8; 32]> = sealed
            .iter()
            .map(|(id, bytes)| (*id, SealedEnv::hash_bytes(bytes)))
            .collect();
        // Thousands of signatures: off the async workers.
        let grants = tokio::task::spawn_blocking(move || {
            sign_grants(
                &key,
                job_id,
                &ids,
                spec_hash,
                issued_at,
                expires,
                &sealed_hashes,
            )
        })
        .await
        .map_err(|e| DomainError::invalid(format!("signing failed: {e}")))?;

        let new_job = NewJob {
            id: job_id,
            org_id: caller.org_id,
            job_type: self.job_type.as_str().into(),
            payload: raw.clone(),
            spec_hex: hex::encode(&spec),
            targets: serde_json::to_value(&selector).unwrap_or_default(),
            created_by: caller.actor(),
            timeout_s: i64::from(self.timeout_s),
            expires_at: self.expires_at,
            batch_size: self.batch_size.map(i64::from),
        };
        let rows: Vec<NewJobTarget> = grants
            .iter()
            .map(|(agent_id, (grant, sig))| NewJobTarget {
                agent_id: *agent_id,
                grant_hex: hex::encode(grant),
                signature_hex: hex::encode(sig),
                sealed_hex: sealed.get(agent_id).map(hex::encode),
            })
            .collect();
        let mut details = json!({
            "type": self.job_type.as_str(),
            "payload": payload::audited(&raw),
        });
        if !secret_names.is_empty() {
            // Names only: the values are sealed to the agents and never seen here.
            details["secret_env"] = json!(secret_names);
        }

        let mut tx = domain.begin().await?;
        let job = tx.create_job(&new_job, &rows, now).await?;
        audit::record(
            &mut tx,
            caller,
            "job.create",
            Some(job_target(job.id)),
            {
                details["type"] = json!(job.job_type);
                details["targets"] = json!(job.targets);
                details["total_targets"] = json!(job.total_targets);
                details["timeout_s"] = json!(job.timeout_s);
                details
            },
            now,
        )
        .await?;
        for u in &uses {
            audit::record(
                &mut tx,
                caller,
                "secret.use",
                Some(u.audit_target.clone()),
                u.audit_details.clone(),
                now,
            )
            .await?;
        }
        if !uses.is_empty() {
            let log: Vec<_> = uses.into_iter().map(|u| u.access).collect();
            tx.log_secret_access(&log, now).await?;
        }
        domain.commit(tx).await?;

        engine.job_created();
        domain.events.publish(FleetEvent::JobUpdate {
            job_id: job.id,
            org_id: job.org_id,
            agent_id: None,
            state: "created".into(),
            counts: TargetCounts {
                queued: job.total_targets,
                ..Default::default()
            },
        });
        let preloaded = Preloaded {
            job: job.clone(),
            grants: grants
                .into_iter()
                .map(|(agent_id, (grant, signature))| {
                    let sealed = sealed.remove(&agent_id).unwrap_or_default();
                    let signed = SignedTarget {
                        grant,
                        signature,
                        sealed,
                    };
                    (agent_id, signed)
                })
                .collect(),
        };
        engine.start(job.id, Some(Box::new(preloaded)));
        Ok(job)
    }

    /// The request's limits that do not depend on its payload.
    fn check_limits(&self, now_ms: i64) -> DomainResult<()> {
        if self.timeout_s == 0 || self.timeout_s > MAX_JOB_TIMEOUT_S {
            return Err(DomainError::invalid(format!(
                "timeout_s must be between 1 and {MAX_JOB_TIMEOUT_S}"
            )));
        }
        if let Some(e) = self.expires_at
            && e <= now_ms
        {
            return Err(DomainError::invalid("expires_at must be in the future"));
        }
        match self.batch_size {
            Some(0) => Err(DomainError::invalid("batch_size must be at least 1")),
            Some(n) if n as usize > MAX_JOB_TARGETS => Err(DomainError::invalid(format!(
                "batch_size must be at most {MAX_JOB_TARGETS}"
            ))),
            _ => Ok(()),
        }
    }
}

/// How a job is named in the audit log.
pub(super) fn job_target(id: Uuid) -> String {
    format!("job:{id}")
}

/// One grant per agent; an agent with sealed secrets gets their hash in its grant.
fn sign_grants(
    key: &SigningKey,
    job_id: Uuid,
    agents: &[Uuid],
    spec_hash: [u8; 32],
    now: u64,
    expires_at_ms: Option<u64>,
    sealed_hashes: &HashMap<Uuid, [u8; 32]>,
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
                sealed_hash: sealed_hashes.get(agent_id).copied(),
            };
            let (bytes, sig) = grant.sign(key);
            (*agent_id, (bytes, sig.to_vec()))
        })
        .collect()
}

/// The names of a job's secrets: only a script takes them; 1 to `MAX_SEALED_SECRETS`, each a
/// valid variable name, none twice, none also a plain `env` entry. They become its spec's
/// `secret_env`.
fn check_secret_names(payload: &mut JobPayload, names: &[String]) -> DomainResult<()> {
    let JobPayload::RunScript(script) = payload else {
        return Err(DomainError::invalid("only run_script jobs take secrets"));
    };
    if names.is_empty() || names.len() > MAX_SEALED_SECRETS {
        return Err(DomainError::invalid(format!(
            "a job takes 1 to {MAX_SEALED_SECRETS} secrets"
        )));
    }
    let mut seen = BTreeSet::new();
    for name in names {
        if !valid_env_name(name) {
            return Err(DomainError::invalid(format!(
                "secret name {name:?} must match [A-Za-z_][A-Za-z0-9_]* (at most {} characters)",
                reap3r_wire::MAX_SECRET_ENV_NAME_CHARS
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(DomainError::invalid(format!(
                "secret {name} is named twice"
            )));
        }
        if script.env.iter().any(|(k, _)| k == name) {
            return Err(DomainError::invalid(format!(
                "{name} is both a secret and a plain env entry"
            )));
        }
    }
    script.secret_env = names.to_vec();
    Ok(())
}

/// Every target, and only the targets, must have its sealed env, each holding exactly the
/// job's secret names.
fn check_sealed(secrets: &JobSecrets, targets: &[Uuid]) -> DomainResult<()> {
    if secrets.job_id.is_nil() {
        return Err(DomainError::invalid("sealed secrets need the job's id"));
    }
    let wanted: HashSet<Uuid> = targets.iter().copied().collect();
    if let Some(extra) = secrets.sealed.keys().find(|id| !wanted.contains(id)) {
        return Err(DomainError::invalid(format!(
            "secrets are sealed to agent {extra}, which the job does not target"
        )));
    }
    let missing: Vec<String> = targets
        .iter()
        .filter(|id| !secrets.sealed.contains_key(id))
        .map(Uuid::to_string)
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing
            .iter()
            .take(MAX_NAMED_AGENTS)
            .map(String::as_str)
            .collect();
        return Err(DomainError::bad_request(
            "secrets_not_sealed",
            format!(
                "{} targeted agent(s) have no sealed secrets: {}",
                missing.len(),
                shown.join(", ")
            ),
        ));
    }
    for (agent_id, bytes) in &secrets.sealed {
        SealedEnv::from_bytes(bytes)
            .and_then(|env| env.check_names(&secrets.names))
            .map_err(|e| {
                DomainError::invalid(format!("secrets sealed to agent {agent_id}: {e}"))
            })?;
    }
    Ok(())
}

/// Every target must report the type's capability (and for scripts `interpreter:<name>`).
fn check_capabilities(
    payload: &JobPayload,
    agents: &[(Uuid, Vec<String>, String)],
) -> DomainResult<()> {
    let mut need = vec![payload.job_type().capability().to_owned()];
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
    let shown: Vec<String> = lacking.iter().take(MAX_NAMED_AGENTS).cloned().collect();
    let more = if lacking.len() > MAX_NAMED_AGENTS {
        format!(" and {} more", lacking.len() - MAX_NAMED_AGENTS)
    } else {
        String::new()
    };
    Err(DomainError::bad_request(
        "unsupported_by_agent",
        format!(
            "{} targeted agent(s) cannot run this job (missing {}): {}{more}",
            lacking.len(),
            need.join(" and "),
            shown.join(", ")
        ),
    ))
}
