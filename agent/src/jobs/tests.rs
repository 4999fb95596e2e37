//! Engine tests without a server: grants, the ledger's exactly-once rules, restart recovery,
//! and every job type run through the same path a dispatch takes.

use std::path::Path;
use std::time::Duration;

use reap3r_wire::{
    AgentConfig, JobDispatch, JobEnd, JobGrant, JobPayload, JobResult, JobSpec, ScriptJob,
    SigningKey,
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
    let spec = spec.to_bytes();
    let grant = JobGrant {
        job_id,
        agent_id,
        spec_hash: JobSpec::hash_bytes(&spec),
        issued_at_ms: now_ms(),
        expires_at_ms,
    };
    let (grant, signature) = grant.sign(key);
    JobDispatch {
        spec,
        grant,
        signature: signature.to_vec(),
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

#[tokio::test]
async fn bad_grants_are_refused_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let spec = sh("echo hi");
    let id = [9; 16];

    let wrong_key = SigningKey::from_bytes(&[8; 32]);
    let d = dispatch_signed_by(&wrong_key, id, AGENT, &spec, None);
    assert!(refusal(&f.engine, &d).contains("not signed by the pinned server key"));

    let d = dispatch_signed_by(&server_key(), id, [2; 16], &spec, None);
    assert!(refusal(&f.engine, &d).contains("another agent"));

    let mut d = dispatch(id, &spec);
    d.spec = sh("rm -rf /").to_bytes();
    assert!(refusal(&f.engine, &d).contains("does not match"));

    let d = dispatch_signed_by(&server_key(), id, AGENT, &spec, Some(now_ms() - 400_000));
    assert!(refusal(&f.engine, &d).contains("expired"));

    // Still within the allowed skew: accepted.
    let mut d = dispatch_signed_by(&server_key(), id, AGENT, &spec, Some(now_ms() - 200_000));
    d.signature[0] ^= 1;
    assert!(refusal(&f.engine, &d).contains("not signed"));

    // Nothing was recorded: the same id still runs when the grant is good.
    assert!(f.engine.shared.ledger.get(&id).unwrap().is_none());
    let d = dispatch_signed_by(&server_key(), id, AGENT, &spec, Some(now_ms() - 200_000));
    assert!(matches!(
        f.engine.shared.decide(&d, now_ms()),
        Decision::Accepted { .. }
    ));
}

#[tokio::test]
async fn a_job_id_runs_once_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let id = [3; 16];
    let spec = sh("echo once");
    {
        let f = open(dir.path());
        let result = run(&f.engine, id, &spec).await;
        assert_eq!(result.end, JobEnd::Succeeded);
        assert_eq!(result.stdout, b"once\n");
        match f.engine.shared.decide(&dispatch(id, &spec), now_ms()) {
            Decision::Duplicate { job_id, result: r } => {
                assert_eq!(job_id, id);
                assert_eq!(r, Some(result));
            }
            other => panic!("{other:?}"),
        }
    }
    // Reopened (agent restart): still a duplicate, result still in the outbox.
    let f = open(dir.path());
    match f.engine.shared.decide(&dispatch(id, &spec), now_ms()) {
        Decision::Duplicate {
            result: Some(r), ..
        } => assert_eq!(r.stdout, b"once\n"),
        other => panic!("{other:?}"),
    }
    // After the ack: still a duplicate, with nothing to resend.
    f.engine.result_acked(id);
    assert!(f.engine.shared.ledger.outbox().unwrap().is_empty());
    assert!(matches!(
        f.engine.shared.decide(&dispatch(id, &spec), now_ms()),
        Decision::Duplicate { result: None, .. }
    ));
}

#[tokio::test]
async fn restart_turns_a_running_job_into_a_failed_result_and_kills_its_group() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let id = [4; 16];
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let entry = Entry {
            job_type: "run_script".into(),
            accepted_at_ms: 10,
            expires_at_ms: None,
            boot_id: runner::boot_id(),
            state: JobState::Accepted,
        };
        assert!(ledger.accept(&id, &entry).unwrap());
        ledger
            .set_state(
                &id,
                JobState::Running {
                    started_at_ms: 11,
                    process: Some(ProcessRecord {
                        pid,
                        pgid: pid,
                        start_ticks: runner::proc_stat(pid).map(|(_, t)| t),
                    }),
                },
            )
            .unwrap();
        // Accepted but never started.
        let mut other = entry.clone();
        other.job_type = "process_list".into();
        assert!(ledger.accept(&[5; 16], &other).unwrap());
    }
    let f = open(dir.path());
    // The old process group was killed.
    let status = child.wait().unwrap();
    assert!(!status.success());
    let outbox = f.engine.shared.ledger.outbox().unwrap();
    assert_eq!(outbox.len(), 2);
    let r = outbox.iter().find(|r| r.job_id == id).unwrap();
    assert_eq!(r.end, JobEnd::Failed);
    assert_eq!(r.error.as_deref(), Some(RESTARTED_WHILE_RUNNING));
    assert_eq!(r.started_at_ms, 11);
    let r = outbox.iter().find(|r| r.job_id == [5; 16]).unwrap();
    assert_eq!(r.error.as_deref(), Some(RESTARTED_BEFORE_START));
    // Both are finished: never run again.
    assert!(f.engine.shared.ledger.unfinished().unwrap().is_empty());
    assert!(matches!(
        f.engine.shared.decide(&dispatch(id, &sh("true")), now_ms()),
        Decision::Duplicate {
            result: Some(_),
            ..
        }
    ));
}

#[test]
fn a_reused_pid_is_not_killed_at_recovery() {
    let me = std::process::id();
    let record = ProcessRecord {
        pid: me,
        pgid: me,
        start_ticks: runner::proc_stat(me).map(|(_, t)| t + 1),
    };
    assert!(!kill_leftover(&record));
}

#[tokio::test]
async fn script_result_is_persisted_and_finished() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let id = [6; 16];
    let mut spec = sh("echo \"$1-$GREETING\"; pwd; echo warn >&2; exit 7");
    if let JobPayload::RunScript(s) = &mut spec.payload {
        s.args = vec!["arg1".into()];
        s.env = vec![("GREETING".into(), "hello".into())];
        s.working_dir = Some("/tmp".into());
    }
    let result = run(&f.engine, id, &spec).await;
    assert_eq!(result.end, JobEnd::Failed);
    assert_eq!(result.exit_code, Some(7));
    assert_eq!(result.stdout, b"arg1-hello\n/tmp\n");
    assert_eq!(result.stderr, b"warn\n");
    assert!(result.started_at_ms <= result.finished_at_ms);
    assert_eq!(f.engine.shared.ledger.outbox().unwrap(), vec![result]);
    assert!(matches!(
        f.engine.shared.ledger.get(&id).unwrap().unwrap().state,
        JobState::Finished { .. }
    ));
    assert!(lock(&f.engine.shared.running).is_empty());
    // The script file is gone.
    let scripts = dir.path().join("scripts");
    assert_eq!(std::fs::read_dir(scripts).unwrap().count(), 0);
}

#[tokio::test]
async fn bash_and_python_scripts_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let r = run(
        &f.engine,
        [1; 16],
        &script("bash", "echo ${BASH_VERSION:+bash}", 30),
    )
    .await;
    assert_eq!(r.stdout, b"bash\n");
    if f.engine.shared.caps.interpreter("python3").is_some() {
        let r = run(&f.engine, [2; 16], &script("python3", "print(6*7)", 30)).await;
        assert_eq!((r.end, r.stdout), (JobEnd::Succeeded, b"42\n".to_vec()));
    }
}

#[tokio::test]
async fn bad_scripts_are_refused_results() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let r = run(&f.engine, [1; 16], &script("cobol", "x", 30)).await;
    assert_eq!(r.end, JobEnd::Refused);
    assert!(r.error.unwrap().contains("not available"));
    let mut spec = sh("true");
    if let JobPayload::RunScript(s) = &mut spec.payload {
        s.working_dir = Some("/nonexistent/reap3r".into());
    }
    let r = run(&f.engine, [2; 16], &spec).await;
    assert_eq!(r.end, JobEnd::Refused);
    assert!(r.error.unwrap().contains("does not exist"));
    // A refused result is still a result: in the outbox, and the id is never run again.
    assert_eq!(f.engine.shared.ledger.outbox().unwrap().len(), 2);
}

#[tokio::test]
async fn timeout_ends_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let started = std::time::Instant::now();
    let r = run(
        &f.engine,
        [1; 16],
        &script("sh", "echo before; sleep 300 & sleep 300", 1),
    )
    .await;
    assert_eq!(r.end, JobEnd::TimedOut);
    assert_eq!(r.stdout, b"before\n");
    assert_eq!(r.exit_code, None);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn cancel_and_shutdown_stop_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let engine = Arc::new(f.engine);
    let id = [1; 16];
    let task = {
        let engine = engine.clone();
        tokio::spawn(async move { run(&engine, id, &sh("sleep 300")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.cancel(id);
    let r = task.await.unwrap();
    assert_eq!(r.end, JobEnd::Cancelled);

    // Shutdown: the job is stopped and its result recorded as failed.
    let id = [2; 16];
    let Decision::Accepted { job, stop } = engine
        .shared
        .decide(&dispatch(id, &sh("sleep 300")), now_ms())
    else {
        panic!()
    };
    let shared = engine.shared.clone();
    shared.clone().spawn(async move {
        shared.run_job(job, stop, None).await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.shutdown().await;
    let r = engine.shared.ledger.outbox_get(&id).unwrap().unwrap();
    assert_eq!(r.end, JobEnd::Failed);
    assert_eq!(
        r.error.as_deref(),
        Some("agent stopped while the job was running")
    );
    // A stopping agent takes no new jobs.
    assert!(refusal(&engine, &dispatch([3; 16], &sh("true"))).contains("stopping"));
}

#[tokio::test]
async fn process_list_reports_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let spec = JobSpec {
        timeout_s: 30,
        payload: JobPayload::ProcessList,
    };
    let r = run(&f.engine, [1; 16], &spec).await;
    assert_eq!(r.end, JobEnd::Succeeded, "{:?}", r.error);
    let data = r.data.unwrap();
    assert!(data.len() <= reap3r_wire::MAX_RESULT_DATA_BYTES);
    let list: Vec<Value> = serde_json::from_str(&data).unwrap();
    let me = list
        .iter()
        .find(|p| p["pid"] == std::process::id())
        .expect("own process listed");
    for key in [
        "ppid",
        "name",
        "cmd",
        "user_id",
        "cpu_percent",
        "memory_bytes",
        "status",
    ] {
        assert!(me.get(key).is_some(), "{key}");
    }
}

#[tokio::test]
async fn process_kill_refuses_and_kills() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let kill = |pid| JobSpec {
        timeout_s: 30,
        payload: JobPayload::ProcessKill { pid },
    };
    for (i, pid) in [0, 1, std::process::id()].into_iter().enumerate() {
        let r = run(&f.engine, [i as u8 + 1; 16], &kill(pid)).await;
        assert_eq!(r.end, JobEnd::Refused, "pid {pid}");
    }
    let mut child = tokio::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let r = run(&f.engine, [10; 16], &kill(pid)).await;
    assert_eq!(r.end, JobEnd::Succeeded, "{:?}", r.error);
    assert!(r.data.unwrap().contains("SIGTERM"));
    assert!(!child.wait().await.unwrap().success());
}

#[tokio::test]
async fn process_kill_escalates_to_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    // `exec` keeps the pid: the process that ignores SIGTERM is the child itself.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "trap '' TERM; exec sleep 300"])
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // Let the shell install the trap and exec.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spec = JobSpec {
        timeout_s: 30,
        payload: JobPayload::ProcessKill { pid },
    };
    let r = run(&f.engine, [1; 16], &spec).await;
    assert_eq!(r.end, JobEnd::Succeeded, "{:?}", r.error);
    assert!(r.data.unwrap().contains("SIGKILL"));
    assert!(!child.wait().await.unwrap().success());
}

#[tokio::test]
async fn config_update_is_applied_by_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = open(dir.path());
    let applier = tokio::spawn(async move {
        let req = f.config_rx.recv().await.unwrap();
        let applied = req.config.clamped();
        let _ = req.reply.send(Ok(applied));
        applied
    });
    let spec = JobSpec {
        timeout_s: 30,
        payload: JobPayload::ConfigUpdate(AgentConfig {
            heartbeat_interval_s: 0,
            metrics_interval_s: 90,
        }),
    };
    let r = run(&f.engine, [1; 16], &spec).await;
    assert_eq!(r.end, JobEnd::Succeeded);
    let applied = applier.await.unwrap();
    assert_eq!(applied.heartbeat_interval_s, 1);
    let data: Value = serde_json::from_str(&r.data.unwrap()).unwrap();
    assert_eq!(data["heartbeat_interval_s"], 1);
    assert_eq!(data["metrics_interval_s"], 90);
}

#[tokio::test]
async fn power_jobs_run_the_power_command() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("power-args");
    let cmd = dir.path().join("fake-shutdown");
    std::fs::write(
        &cmd,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\necho scheduled\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = open_with_power(&dir.path().join("data"), cmd.to_str().unwrap());
    let reboot = JobSpec {
        timeout_s: 30,
        payload: JobPayload::Reboot { delay_s: 61 },
    };
    let r = run(&f.engine, [1; 16], &reboot).await;
    assert_eq!(r.end, JobEnd::Succeeded, "{:?}", r.error);
    assert_eq!(r.stdout, b"scheduled\n");
    let shutdown = JobSpec {
        timeout_s: 30,
        payload: JobPayload::Shutdown { delay_s: 0 },
    };
    let r = run(&f.engine, [2; 16], &shutdown).await;
    assert_eq!(r.end, JobEnd::Succeeded);
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "-r +2\n-h now\n");
}

#[tokio::test]
async fn a_reboot_that_restarted_the_system_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        let entry = Entry {
            job_type: "reboot".into(),
            accepted_at_ms: 1,
            expires_at_ms: None,
            boot_id: "another-boot".into(),
            state: JobState::Running {
                started_at_ms: 2,
                process: None,
            },
        };
        ledger.accept(&[1; 16], &entry).unwrap();
    }
    let f = open(dir.path());
    let r = f
        .engine
        .shared
        .ledger
        .outbox_get(&[1; 16])
        .unwrap()
        .unwrap();
    assert_eq!(r.end, JobEnd::Succeeded);
}

#[tokio::test]
async fn inventory_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let spec = JobSpec {
        timeout_s: 60,
        payload: JobPayload::CollectInventory,
    };
    let r = run(&f.engine, [1; 16], &spec).await;
    assert_eq!(r.end, JobEnd::Succeeded, "{:?}", r.error);
    let data = r.data.unwrap();
    assert!(data.len() <= reap3r_wire::MAX_RESULT_DATA_BYTES);
    let inv: Value = serde_json::from_str(&data).unwrap();
    assert!(!inv["os"]["kernel"].as_str().unwrap().is_empty());
    assert!(inv["cpu"]["cores"].as_u64().unwrap() > 0);
    assert!(inv["memory"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(inv["disks"].is_array() && inv["network"].is_array());
    if f.engine.shared.caps.dpkg_query.is_some() {
        assert_eq!(inv["packages"]["manager"], "dpkg");
        assert!(!inv["packages"]["items"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn service_jobs_validate_names() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    if f.engine.shared.caps.systemctl.is_none() {
        return;
    }
    let spec = JobSpec {
        timeout_s: 30,
        payload: JobPayload::ServiceAction {
            service: "--host=evil".into(),
            action: reap3r_wire::ServiceVerb::Status,
        },
    };
    let r = run(&f.engine, [1; 16], &spec).await;
    assert_eq!(r.end, JobEnd::Refused);
    // Listing works or fails cleanly depending on whether systemd runs here.
    let spec = JobSpec {
        timeout_s: 30,
        payload: JobPayload::ServiceList,
    };
    let r = run(&f.engine, [2; 16], &spec).await;
    if r.end == JobEnd::Succeeded {
        let _: Vec<Value> = serde_json::from_str(&r.data.unwrap()).unwrap();
    } else {
        assert_eq!(r.end, JobEnd::Failed);
    }
}

#[test]
fn capabilities_list_job_types_and_interpreters() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let f = open(dir.path());
    let caps = f.engine.capabilities();
    assert!(caps.contains(&"job:run_script".to_string()));
    assert!(caps.contains(&"interpreter:sh".to_string()));
}
