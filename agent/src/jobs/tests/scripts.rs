//! `run_script` through the engine: its result persisted and finished, interpreters, refused
//! scripts, the timeout, and stopping by cancel and by shutdown.

use super::*;

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
