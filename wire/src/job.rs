//! Jobs on the wire: what an agent may be told to run, the server-signed grant that authorises
//! one agent to run one job, and the messages of a job's stream (ack, output, result).
//!
//! A job has one [`JobSpec`] (what to run, the same for every target) and one [`JobGrant`] per
//! target agent (who runs it, until when, and the BLAKE3 hash of the spec's bytes). The server
//! signs the grant's bytes with its Ed25519 key when the job is created and stores the signature;
//! the agent checks it against the key it pinned at enrolment, checks that the grant names itself
//! and that the spec hashes to the grant's `spec_hash`. Rows in the database alone cannot make an
//! agent run anything: without the server key there is no valid grant, and a grant for one agent
//! or one job is useless for another.
//!
//! A script may also get secrets: its spec names the environment variables
//! ([`ScriptJob::secret_env`]), and each target's dispatch carries the values sealed to that
//! agent's X25519 key ([`JobDispatch::sealed`], a [`SealedEnv`]), whose BLAKE3 is in that
//! target's signed grant ([`JobGrant::sealed_hash`]). See [`crate::seal_value`].

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::sealing::SealedEnv;
use crate::{AgentConfig, WireError};

/// Domain separation for grant signatures, so no other signed bytes can pass as a grant. v2:
/// the grant carries `sealed_hash`.
pub(crate) const GRANT_CONTEXT: &[u8] = b"reap3r job grant v2\0";

/// Most bytes of stdout an agent keeps (and streams) for one job.
pub const MAX_STDOUT_BYTES: u32 = 64 * 1024;
/// Most bytes of stderr an agent keeps (and streams) for one job.
pub const MAX_STDERR_BYTES: u32 = 32 * 1024;
/// Most bytes of structured result data (process lists, inventory) in one result.
pub const MAX_RESULT_DATA_BYTES: usize = 128 * 1024;
/// Most bytes of script text in a spec.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Most bytes in one output chunk.
pub const MAX_OUTPUT_CHUNK: usize = 16 * 1024;
/// Longest job timeout, in seconds (one day).
pub const MAX_JOB_TIMEOUT_S: u32 = 86_400;

/// Interpreters a `run_script` job may name; an agent reports which it has.
pub const INTERPRETERS: [&str; 4] = ["sh", "bash", "python3", "pwsh"];

/// What to run. The variant names are the API's job `type`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobPayload {
    RunScript(ScriptJob),
    ProcessList,
    ProcessKill {
        pid: u32,
    },
    ServiceList,
    ServiceAction {
        service: String,
        action: ServiceVerb,
    },
    CollectInventory,
    ConfigUpdate(AgentConfig),
    Reboot {
        delay_s: u32,
    },
    Shutdown {
        delay_s: u32,
    },
    /// Broadcast a magic packet for `mac` to `broadcast:port` (the agent is the relay on the
    /// sleeping machine's subnet).
    WakeOnLan {
        mac: [u8; 6],
        broadcast: [u8; 4],
        port: u16,
    },
}

impl JobPayload {
    /// The payload's job type.
    pub fn job_type(&self) -> JobType {
        match self {
            Self::RunScript(_) => JobType::RunScript,
            Self::ProcessList => JobType::ProcessList,
            Self::ProcessKill { .. } => JobType::ProcessKill,
            Self::ServiceList => JobType::ServiceList,
            Self::ServiceAction { .. } => JobType::ServiceAction,
            Self::CollectInventory => JobType::CollectInventory,
            Self::ConfigUpdate(_) => JobType::ConfigUpdate,
            Self::Reboot { .. } => JobType::Reboot,
            Self::Shutdown { .. } => JobType::Shutdown,
            Self::WakeOnLan { .. } => JobType::WakeOnLan,
        }
    }

    /// The job type as the API and capabilities name it (`job:<type>`).
    pub fn type_name(&self) -> &'static str {
        self.job_type().as_str()
    }
}

/// Declares [`JobType`] from one list: each type's variant, its name, and whether a job of
/// that type needs the caller's explicit confirmation. Everything else about a type (its
/// capability, its permission, the API's enum) derives from this list.
macro_rules! job_types {
    ($($variant:ident => $name:literal, confirm: $confirm:literal;)+) => {
        /// The kinds of job, the one list every other place derives from: the payload
        /// ([`JobPayload::job_type`]), the capability an agent reports (`job:<type>`), the
        /// permission a caller needs (`job:<type>`) and the API's `type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum JobType { $($variant),+ }

        impl JobType {
            /// Every job type, in the order of the list.
            pub const ALL: &'static [JobType] = &[$(JobType::$variant),+];

            /// The name of the type: the API's `type`, `jobs.job_type` in the store.
            pub const fn as_str(self) -> &'static str {
                match self { $(JobType::$variant => $name),+ }
            }

            /// What an agent reports in its hello when it can run this type.
            pub const fn capability(self) -> &'static str {
                match self { $(JobType::$variant => concat!("job:", $name)),+ }
            }

            /// The name of the permission a caller needs to create a job of this type.
            pub const fn permission_name(self) -> &'static str {
                match self { $(JobType::$variant => concat!("job:", $name)),+ }
            }

            /// Whether a job of this type needs `"confirm": true` (it takes machines down).
            pub const fn needs_confirmation(self) -> bool {
                match self { $(JobType::$variant => $confirm),+ }
            }
        }
    };
}

job_types! {
    RunScript => "run_script", confirm: false;
    ProcessList => "process_list", confirm: false;
    ProcessKill => "process_kill", confirm: false;
    ServiceList => "service_list", confirm: false;
    ServiceAction => "service_action", confirm: false;
    CollectInventory => "collect_inventory", confirm: false;
    ConfigUpdate => "config_update", confirm: false;
    Reboot => "reboot", confirm: true;
    Shutdown => "shutdown", confirm: true;
    WakeOnLan => "wake_on_lan", confirm: false;
}

impl std::str::FromStr for JobType {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, WireError> {
        JobType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| WireError::Body(format!("unknown job type {s:?}")))
    }
}

impl std::fmt::Display for JobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptJob {
    /// One of [`INTERPRETERS`].
    pub interpreter: String,
    pub script: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// Names of the environment variables whose values come sealed in the dispatch (names
    /// only: the spec is shared by every target and signed). The agent sets them only in the
    /// child's environment and masks their values in the output.
    pub secret_env: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceVerb {
    Start,
    Stop,
    Restart,
    Status,
}

impl ServiceVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Status => "status",
        }
    }
}

/// What every target of a job runs, and under which limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The agent kills the job's process group after this long.
    pub timeout_s: u32,
    pub payload: JobPayload,
}

impl JobSpec {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        postcard::from_bytes(bytes).map_err(|e| WireError::Body(e.to_string()))
    }

    /// The hash a grant commits to.
    pub fn hash_bytes(bytes: &[u8]) -> [u8; 32] {
        *blake3::hash(bytes).as_bytes()
    }
}

/// The server's permission for one agent to run one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobGrant {
    pub job_id: [u8; 16],
    pub agent_id: [u8; 16],
    /// BLAKE3 of the spec's bytes as sent.
    pub spec_hash: [u8; 32],
    pub issued_at_ms: u64,
    /// The agent refuses the job after this time (by its own clock, with some slack for skew).
    pub expires_at_ms: Option<u64>,
    /// BLAKE3 of this target's sealed env bytes ([`JobDispatch::sealed`]); `None` when the job
    /// gives this target no secrets (the dispatch's `sealed` is then empty).
    pub sealed_hash: Option<[u8; 32]>,
}

impl JobGrant {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Signs the grant's bytes; returns them with the signature.
    pub fn sign(&self, key: &SigningKey) -> (Vec<u8>, [u8; 64]) {
        let bytes = self.to_bytes();
        let signature = crate::grant::sign(GRANT_CONTEXT, &bytes, key);
        (bytes, signature)
    }
}

/// Sent on a new stream to give an agent a job: the spec, the signed grant and the target's
/// sealed secrets, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDispatch {
    pub spec: Vec<u8>,
    pub grant: Vec<u8>,
    /// 64 bytes (serde has no impl for `[u8; 64]`); any other length fails verification.
    pub signature: Vec<u8>,
    /// Postcard [`SealedEnv`] bytes hashing to the grant's `sealed_hash`; empty when the job
    /// has no secrets for this target.
    pub sealed: Vec<u8>,
}

/// Why an agent refuses a dispatch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchRefusal {
    #[error("job grant is not signed by the pinned server key")]
    BadSignature,
    #[error("job grant is for another agent")]
    WrongAgent,
    #[error("job spec does not match the signed grant")]
    SpecMismatch,
    #[error("job grant expired")]
    Expired,
    #[error("job does not decode: {0}")]
    Malformed(String),
    /// The sealed env does not hash to the grant's `sealed_hash`, does not decode, or does not
    /// hold exactly the spec's `secret_env` names (the reason names variables, never values).
    #[error("sealed secrets do not match the signed grant: {0}")]
    SealedMismatch(String),
}

/// A dispatch whose grant verified for this agent: the only way to obtain a runnable job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJob {
    pub job_id: [u8; 16],
    pub grant: JobGrant,
    pub spec: JobSpec,
    /// The target's sealed values, still sealed (opened only by the agent's job runner); their
    /// names are exactly the spec's `secret_env`. `None` when the grant has no `sealed_hash`.
    pub sealed: Option<SealedEnv>,
}

impl JobDispatch {
    /// The job id the grant claims, read without trusting it (for refusals and dedup lookups).
    pub fn claimed_job_id(&self) -> Option<[u8; 16]> {
        postcard::from_bytes::<JobGrant>(&self.grant)
            .ok()
            .map(|g| g.job_id)
    }

    /// Agent side: checks the signature against the pinned server key, that the grant names
    /// `agent_id`, that the spec is the one signed for, that the sealed env is the one signed
    /// for (and holds exactly the secrets the spec names), and that the grant has not expired
    /// at `now_ms` (allowing `skew_ms` of clock difference).
    pub fn verify(
        &self,
        server_key: &VerifyingKey,
        agent_id: &[u8; 16],
        now_ms: u64,
        skew_ms: u64,
    ) -> Result<VerifiedJob, DispatchRefusal> {
        if !crate::grant::verify(GRANT_CONTEXT, &self.grant, &self.signature, server_key) {
            return Err(DispatchRefusal::BadSignature);
        }
        let grant: JobGrant = postcard::from_bytes(&self.grant)
            .map_err(|e| DispatchRefusal::Malformed(e.to_string()))?;
        if &grant.agent_id != agent_id {
            return Err(DispatchRefusal::WrongAgent);
        }
        if JobSpec::hash_bytes(&self.spec) != grant.spec_hash {
            return Err(DispatchRefusal::SpecMismatch);
        }
        let mismatch = |why: String| Err(DispatchRefusal::SealedMismatch(why));
        match grant.sealed_hash {
            Some(hash) if SealedEnv::hash_bytes(&self.sealed) != hash => {
                return mismatch("the sealed env does not hash to the grant's sealed_hash".into());
            }
            None if !self.sealed.is_empty() => {
                return mismatch("a sealed env came with a grant that has none".into());
            }
            _ => {}
        }
        if grant
            .expires_at_ms
            .is_some_and(|exp| now_ms > exp.saturating_add(skew_ms))
        {
            return Err(DispatchRefusal::Expired);
        }
        let spec = JobSpec::from_bytes(&self.spec)
            .map_err(|e| DispatchRefusal::Malformed(e.to_string()))?;
        let sealed = match grant.sealed_hash {
            Some(_) => Some(
                SealedEnv::from_bytes(&self.sealed)
                    .map_err(|e| DispatchRefusal::SealedMismatch(e.to_string()))?,
            ),
            None => None,
        };
        check_sealed_names(&spec.payload, sealed.as_ref())?;
        Ok(VerifiedJob {
            job_id: grant.job_id,
            grant,
            spec,
            sealed,
        })
    }
}

/// The sealed entries must name exactly the spec's `secret_env`; a job type that takes no
/// secrets must come with none.
fn check_sealed_names(
    payload: &JobPayload,
    sealed: Option<&SealedEnv>,
) -> Result<(), DispatchRefusal> {
    let empty = SealedEnv::default();
    let sealed = sealed.unwrap_or(&empty);
    match payload {
        JobPayload::RunScript(script) => sealed
            .check_names(&script.secret_env)
            .map_err(|e| DispatchRefusal::SealedMismatch(e.to_string())),
        _ if sealed.entries.is_empty() => Ok(()),
        other => Err(DispatchRefusal::SealedMismatch(format!(
            "a {} job takes no secrets",
            other.type_name()
        ))),
    }
}

/// The agent's answer to a dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobAckOutcome {
    /// Recorded in the agent's ledger; it will run.
    Accepted,
    /// The agent already has this job (running, or its result is in the outbox or was acked);
    /// it does not run it again.
    Duplicate,
    /// Not run and not recorded, with the reason (bad signature, another agent's grant, a spec
    /// that does not match, an expired grant). A verified job the agent cannot run (missing
    /// interpreter, bad working dir) is `Accepted` and ends with a `JobEnd::Refused` result.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAck {
    pub job_id: [u8; 16],
    pub outcome: JobAckOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Live output, streamed while a job runs (within the same caps as the stored result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    pub job_id: [u8; 16],
    pub stream: OutputStream,
    /// Byte offset of `data` within the stream.
    pub offset: u64,
    pub data: Vec<u8>,
}

/// How a job ended on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEnd {
    /// Exit code 0 (or the operation succeeded).
    Succeeded,
    /// Non-zero exit, a signal, or an operation that failed.
    Failed,
    /// The agent killed the process group at the timeout.
    TimedOut,
    /// The agent killed the process group on the server's cancel.
    Cancelled,
    /// The agent would not run it (see `error`).
    Refused,
}

impl JobEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Refused => "refused",
        }
    }
}

/// The durable outcome of one job on one agent. The agent keeps it in its outbox until the
/// server's [`Message::JobResultAck`](crate::Message::JobResultAck), which the server sends only
/// after the result is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub job_id: [u8; 16],
    pub end: JobEnd,
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Structured result as JSON text (process list, services, inventory), capped.
    pub data: Option<String>,
    /// Why it failed or was refused, for people.
    pub error: Option<String>,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::tests::TestRng;
    use crate::{SealingSecret, open_value, seal_value};

    const JOB: [u8; 16] = [3; 16];
    const AGENT: [u8; 16] = [4; 16];

    fn script(secret_env: &[&str]) -> JobSpec {
        JobSpec {
            timeout_s: 60,
            payload: JobPayload::RunScript(ScriptJob {
                interpreter: "sh".into(),
                script: "echo $A".into(),
                args: vec![],
                env: vec![],
                working_dir: None,
                secret_env: secret_env.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    fn sealed_env(key: &SealingSecret, names: &[&str]) -> Vec<u8> {
        let mut rng = TestRng::new("dispatch");
        SealedEnv {
            entries: names
                .iter()
                .map(|n| seal_value(&key.public(), &JOB, &AGENT, n, b"s3cret", &mut rng).unwrap())
                .collect(),
        }
        .to_bytes()
        .unwrap()
    }

    /// A dispatch signed by `server` whose grant commits to `hash_of` (or to nothing) and that
    /// carries `sealed`.
    fn dispatch(
        server: &SigningKey,
        spec: &JobSpec,
        hash_of: Option<&[u8]>,
        sealed: Vec<u8>,
    ) -> JobDispatch {
        let spec = spec.to_bytes();
        let grant = JobGrant {
            job_id: JOB,
            agent_id: AGENT,
            spec_hash: JobSpec::hash_bytes(&spec),
            issued_at_ms: 0,
            expires_at_ms: None,
            sealed_hash: hash_of.map(SealedEnv::hash_bytes),
        };
        let (grant, signature) = grant.sign(server);
        JobDispatch {
            spec,
            grant,
            signature: signature.to_vec(),
            sealed,
        }
    }

    fn refusal(d: &JobDispatch, server: &SigningKey) -> String {
        match d.verify(&server.verifying_key(), &AGENT, 0, 0) {
            Err(DispatchRefusal::SealedMismatch(why)) => why,
            other => panic!("expected SealedMismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_sealed_env_signed_for_verifies_and_opens() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let key = SealingSecret::generate(&mut TestRng::new("agent"));
        let sealed = sealed_env(&key, &["B", "A"]);
        let d = dispatch(&server, &script(&["A", "B"]), Some(&sealed), sealed.clone());
        let job = d.verify(&server.verifying_key(), &AGENT, 0, 0).unwrap();
        let env = job.sealed.unwrap();
        assert_eq!(env.entries.len(), 2);
        let value = open_value(&key, &job.job_id, &AGENT, &env.entries[0]).unwrap();
        assert_eq!(value.as_slice(), b"s3cret");

        // Without secrets: no hash, nothing sealed.
        let plain = dispatch(&server, &script(&[]), None, vec![]);
        let job = plain.verify(&server.verifying_key(), &AGENT, 0, 0).unwrap();
        assert_eq!(job.sealed, None);
    }

    #[test]
    fn a_sealed_env_that_is_not_the_signed_one_is_refused() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let key = SealingSecret::generate(&mut TestRng::new("agent"));
        let spec = script(&["A"]);
        let sealed = sealed_env(&key, &["A"]);
        let other = sealed_env(&SealingSecret::generate(&mut TestRng::new("x")), &["A"]);

        // Swapped for other bytes, or dropped, or added to a grant without a hash.
        let swapped = dispatch(&server, &spec, Some(&sealed), other.clone());
        assert!(refusal(&swapped, &server).contains("hash"));
        let dropped = dispatch(&server, &spec, Some(&sealed), vec![]);
        assert!(refusal(&dropped, &server).contains("hash"));
        let added = dispatch(&server, &script(&[]), None, sealed.clone());
        assert!(refusal(&added, &server).contains("none"));
        // Signed, but not a sealed env.
        let junk = vec![0xff; 8];
        let garbage = dispatch(&server, &spec, Some(&junk), junk.clone());
        assert!(matches!(
            garbage.verify(&server.verifying_key(), &AGENT, 0, 0),
            Err(DispatchRefusal::SealedMismatch(_))
        ));
        // The grant's hash is covered by the signature.
        let mut forged = dispatch(&server, &spec, Some(&sealed), other.clone());
        let mut grant: JobGrant = postcard::from_bytes(&forged.grant).unwrap();
        grant.sealed_hash = Some(SealedEnv::hash_bytes(&other));
        forged.grant = grant.to_bytes();
        assert_eq!(
            forged.verify(&server.verifying_key(), &AGENT, 0, 0),
            Err(DispatchRefusal::BadSignature)
        );
    }

    #[test]
    fn the_sealed_names_must_be_the_specs_secret_env() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let key = SealingSecret::generate(&mut TestRng::new("agent"));
        let case = |spec: &JobSpec, names: &[&str]| {
            let sealed = sealed_env(&key, names);
            refusal(
                &dispatch(&server, spec, Some(&sealed), sealed.clone()),
                &server,
            )
        };
        assert!(case(&script(&["A", "B"]), &["A"]).contains("B is missing"));
        assert!(case(&script(&["A"]), &["A", "B"]).contains("\"B\" is not a secret"));
        assert!(case(&script(&["A"]), &["A", "A"]).contains("sealed twice"));
        assert!(case(&script(&["A", "A"]), &["A"]).contains("twice"));
        assert!(case(&script(&[]), &["A"]).contains("not a secret"));
        // The spec names a secret but the grant seals nothing.
        let missing = dispatch(&server, &script(&["A"]), None, vec![]);
        assert!(refusal(&missing, &server).contains("A is missing"));
        let bad_name = JobSpec {
            timeout_s: 1,
            payload: JobPayload::RunScript(ScriptJob {
                secret_env: vec!["A-B".into()],
                ..match script(&[]).payload {
                    JobPayload::RunScript(s) => s,
                    _ => unreachable!(),
                }
            }),
        };
        assert!(case(&bad_name, &[]).contains("not a valid variable name"));
        // Other job types take no secrets.
        let list = JobSpec {
            timeout_s: 1,
            payload: JobPayload::ProcessList,
        };
        assert!(case(&list, &["A"]).contains("process_list job takes no secrets"));
        let empty = SealedEnv::default().to_bytes().unwrap();
        assert!(
            dispatch(&server, &list, Some(&empty), empty.clone())
                .verify(&server.verifying_key(), &AGENT, 0, 0)
                .is_ok()
        );
    }

    #[test]
    fn job_types_derive_their_names_from_one_list() {
        assert_eq!(JobType::ALL.len(), 10);
        for t in JobType::ALL {
            assert_eq!(t.as_str().parse::<JobType>().unwrap(), *t);
            assert_eq!(
                serde_json::to_string(t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
            assert_eq!(t.capability(), format!("job:{t}"));
            assert_eq!(t.permission_name(), format!("job:{t}"));
        }
        let confirmed: Vec<JobType> = JobType::ALL
            .iter()
            .copied()
            .filter(|t| t.needs_confirmation())
            .collect();
        assert_eq!(confirmed, [JobType::Reboot, JobType::Shutdown]);
        assert!("reboot_now".parse::<JobType>().is_err());
        assert_eq!(
            JobPayload::Reboot { delay_s: 0 }.job_type(),
            JobType::Reboot
        );
        assert_eq!(
            JobPayload::CollectInventory.type_name(),
            "collect_inventory"
        );
    }
}
