//! Engine tests without a server: grants, the ledger's exactly-once rules, restart recovery,
//! and every job type run through the same path a dispatch takes.
//!
//! [`admission`] (grants and exactly-once), [`recovery`] (what a restart makes of unfinished
//! jobs), [`scripts`] (`run_script`: results, interpreters, refusals, timeout, cancel and
//! shutdown), [`secrets`] (sealed secrets opened, in the child's environment only, masked in
//! the output), [`job_types`] (every other job type). Here: the rig they share, a
//! [`JobEngine`] on a temporary directory and signed dispatches run as a job stream runs them.

mod admission;
mod job_types;
mod recovery;
mod scripts;
mod secrets;

use std::path::Path;
use std::time::Duration;

use reap3r_wire::{
    AgentConfig, JobDispatch, JobEnd, JobGrant, JobPayload, JobResult, JobSpec, ScriptJob,
    SealedEnv, SigningKey,
};
use serde_json::Value;
use tokio::sync::mpsc;

use super::ledger::Entry;
use super::*;

const AGENT: [u8; 16] = [1; 16];

/// What the core's rules made of a dispatch, as the engine carries it out.
#[derive(Debug)]
enum Decision {
    Refused {
        #[expect(dead_code, reason = "shown in failure messages")]
        job_id: [u8; 16],
        reason: String,
    },
    Duplicate {
        job_id: [u8; 16],
        result: Option<JobResult>,
    },
    Accepted {
        job: VerifiedJob,
        stop: watch::Receiver<Option<Stop>>,
    },
}

impl Shared {
    /// A verified dispatch through the core's rules, as a job stream's first frame goes.
    fn decide(&self, d: &JobDispatch, now_ms: u64) -> Decision {
        let (effects, start) = self
            .admit(|core| Ok(core.on_dispatch(1, 1, d, now_ms)))
            .unwrap();
        if let Some((job, stop)) = start {
            return Decision::Accepted { job, stop };
        }
        let mut decision = None;
        for effect in effects {
            match effect {
                Effect::Send {
                    message: Message::JobAck(ack),
                    ..
                } => {
                    decision = Some(match ack.outcome {
                        JobAckOutcome::Refused(reason) => Decision::Refused {
                            job_id: ack.job_id,
                            reason,
                        },
                        _ => Decision::Duplicate {
                            job_id: ack.job_id,
                            result: None,
                        },
                    })
                }
                Effect::Send {
                    message: Message::JobResult(r),
                    ..
                } => {
                    if let Some(Decision::Duplicate { result, .. }) = decision.as_mut() {
                        *result = Some(r);
                    }
                }
                _ => {}
            }
        }
        decision.unwrap()
    }
}

impl JobEngine {
    /// `JobResultAck` from the server, as the control stream hands it to the core.
    fn result_acked(&self, job_id: [u8; 16]) {
        lock(&self.shared.core).on_message(Message::JobResultAck { job_id });
    }
}

fn server_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The rig agent's sealing key.
fn sealing_key() -> SealingSecret {
    SealingSecret::from_bytes(&[0x11; 32]).unwrap()
}

struct Fixture {
    engine: JobEngine,
    config_rx: mpsc::UnboundedReceiver<ConfigRequest>,
}

fn open(dir: &Path) -> Fixture {
    open_with_power(dir, "shutdown")
}

fn open_with_power(dir: &Path, power: &str) -> Fixture {
    let (config_tx, config_rx) = mpsc::unbounded_channel();
    let engine = JobEngine::open(
        EngineOptions {
            data_dir: dir.to_path_buf(),
            agent_id: AGENT,
            server_key: server_key().verifying_key(),
            sealing: sealing_key(),
            power_command: power.into(),
        },
        config_tx,
    )
    .unwrap();
    Fixture { engine, config_rx }
}

fn dispatch_signed_by(
    key: &SigningKey,
    job_id: [u8; 16],
    agent_id: [u8; 16],
    spec: &JobSpec,
    expires_at_ms: Option<u64>,
) -> JobDispatch {
    signed_with_sealed(key, job_id, agent_id, spec, expires_at_ms, None)
}

/// A dispatch whose grant commits to `sealed` (a `SealedEnv`'s bytes), which it carries.
fn signed_with_sealed(
    key: &SigningKey,
    job_id: [u8; 16],
    agent_id: [u8; 16],
    spec: &JobSpec,
    expires_at_ms: Option<u64>,
    sealed: Option<&SealedEnv>,
) -> JobDispatch {
    let spec = spec.to_bytes();
    let sealed = sealed.map(|s| s.to_bytes().unwrap());
    let grant = JobGrant {
        job_id,
        agent_id,
        spec_hash: JobSpec::hash_bytes(&spec),
        issued_at_ms: now_ms(),
        expires_at_ms,
        sealed_hash: sealed.as_deref().map(SealedEnv::hash_bytes),
    };
    let (grant, signature) = grant.sign(key);
    JobDispatch {
        spec,
        grant,
        signature: signature.to_vec(),
        sealed: sealed.unwrap_or_default(),
    }
}

fn dispatch(job_id: [u8; 16], spec: &JobSpec) -> JobDispatch {
    dispatch_signed_by(&server_key(), job_id, AGENT, spec, Some(now_ms() + 60_000))
}

fn script(interpreter: &str, text: &str, timeout_s: u32) -> JobSpec {
    JobSpec {
        timeout_s,
        payload: JobPayload::RunScript(ScriptJob {
            interpreter: interpreter.into(),
            script: text.into(),
            args: vec![],
            env: vec![],
            working_dir: None,
            secret_env: vec![],
        }),
    }
}

fn sh(text: &str) -> JobSpec {
    script("sh", text, 30)
}

/// Accepts and runs a job the way a dispatch does, without a stream.
async fn run(engine: &JobEngine, job_id: [u8; 16], spec: &JobSpec) -> JobResult {
    match engine.shared.decide(&dispatch(job_id, spec), now_ms()) {
        Decision::Accepted { job, stop } => engine.shared.run_job(job, stop, None).await,
        other => panic!("not accepted: {other:?}"),
    }
}

fn refusal(engine: &JobEngine, d: &JobDispatch) -> String {
    match engine.shared.decide(d, now_ms()) {
        Decision::Refused { reason, .. } => reason,
        other => panic!("not refused: {other:?}"),
    }
}
