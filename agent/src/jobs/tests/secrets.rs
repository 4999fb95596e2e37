//! A script with sealed secrets: each value is opened with the agent's sealing key and set only
//! in the child's environment; every occurrence is masked in the live output and the stored
//! result; nothing of it reaches the ledger or the outbox. A value sealed to another agent, or
//! for another job, is refused, with a reason that names the variable and not the value.

use reap3r_wire::{SealedValue, rand_core, seal_value};

use super::*;

const VALUE: &str = "hunter2-s3cr3t";

fn seal(
    key: &SealingSecret,
    job_id: [u8; 16],
    agent_id: [u8; 16],
    name: &str,
    value: &str,
) -> SealedValue {
    seal_value(
        &key.public(),
        &job_id,
        &agent_id,
        name,
        value.as_bytes(),
        &mut rand_core::UnwrapErr(getrandom::SysRng),
    )
    .unwrap()
}

fn with_secret_env(mut spec: JobSpec, names: &[&str]) -> JobSpec {
    if let JobPayload::RunScript(s) = &mut spec.payload {
        s.secret_env = names.iter().map(|n| n.to_string()).collect();
    }
    spec
}

fn secret_dispatch(job_id: [u8; 16], spec: &JobSpec, sealed: &SealedEnv) -> JobDispatch {
    signed_with_sealed(
        &server_key(),
        job_id,
        AGENT,
        spec,
        Some(now_ms() + 60_000),
        Some(sealed),
    )
}

async fn run_dispatch(engine: &JobEngine, d: &JobDispatch) -> (JobResult, Vec<JobEvent>) {
    match engine.shared.decide(d, now_ms()) {
        Decision::Accepted { job, stop } => {
            // Run as `run_job` does, keeping the live events to look at them.
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut ctx = JobCtx::new(&engine.shared, job.job_id, job.spec.timeout_s, stop, tx);
            let outcome = types::execute(&mut ctx, &job.spec.payload, job.sealed.as_ref()).await;
            let started = ctx.started_at_ms().unwrap_or_default();
            drop(ctx);
            let mut events = Vec::new();
            while let Some(e) = rx.recv().await {
                events.push(e);
            }
            (outcome.into_result(job.job_id, started, now_ms()), events)
        }
        other => panic!("not accepted: {other:?}"),
    }
}

fn live(events: &[JobEvent], which: reap3r_wire::OutputStream) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Output { stream, data, .. } if *stream == which => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test]
async fn the_script_sees_its_secrets_and_the_output_shows_them_masked() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let id = [0x21; 16];
    let spec = with_secret_env(
        sh(&format!(
            "test \"$DB_PASS\" = '{VALUE}' && test \"$TOKEN\" = 'tok' && \
             echo \"pw=$DB_PASS\" && printf '%s' \"$DB_PASS\" | cut -c1-4 && \
             echo \"err $TOKEN $DB_PASS\" >&2"
        )),
        &["DB_PASS", "TOKEN"],
    );
    let sealed = SealedEnv {
        entries: vec![
            seal(&sealing_key(), id, AGENT, "DB_PASS", VALUE),
            seal(&sealing_key(), id, AGENT, "TOKEN", "tok"),
        ],
    };
    let d = secret_dispatch(id, &spec, &sealed);
    let (result, events) = run_dispatch(&f.engine, &d).await;
    assert_eq!(result.end, JobEnd::Succeeded, "{:?}", result.error);
    // A fragment of a value is not the value: only whole occurrences are masked.
    assert_eq!(result.stdout, b"pw=***\nhunt\n");
    assert_eq!(result.stderr, b"err *** ***\n");
    assert_eq!(
        live(&events, reap3r_wire::OutputStream::Stdout),
        result.stdout
    );
    assert_eq!(
        live(&events, reap3r_wire::OutputStream::Stderr),
        result.stderr
    );

    // Through the engine's own path: the outbox and the ledger hold the masked result only.
    let id = [0x22; 16];
    let sealed = SealedEnv {
        entries: vec![
            seal(&sealing_key(), id, AGENT, "DB_PASS", VALUE),
            seal(&sealing_key(), id, AGENT, "TOKEN", "tok"),
        ],
    };
    let d = secret_dispatch(id, &spec, &sealed);
    let Decision::Accepted { job, stop } = f.engine.shared.decide(&d, now_ms()) else {
        panic!("not accepted");
    };
    let result = f.engine.shared.run_job(job, stop, None).await;
    assert_eq!(result.stdout, b"pw=***\nhunt\n");
    assert_eq!(f.engine.shared.ledger.outbox().unwrap(), vec![result]);
    drop(f);
    let file = std::fs::read(dir.path().join("jobs.redb")).unwrap();
    assert!(
        !file.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
        "the value is not in jobs.redb"
    );
}

#[tokio::test]
async fn secrets_sealed_to_another_agent_or_job_are_refused_naming_only_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path());
    let spec = with_secret_env(sh("echo \"$DB_PASS\""), &["DB_PASS"]);
    let other_agent_key = SealingSecret::from_bytes(&[0x99; 32]).unwrap();
    let cases = [
        // Sealed to another agent's key (a server that picked the wrong key, or a replay).
        (
            [0x31; 16],
            seal(&other_agent_key, [0x31; 16], AGENT, "DB_PASS", VALUE),
        ),
        // Sealed for another job, then put in this one's dispatch.
        (
            [0x32; 16],
            seal(&sealing_key(), [0x77; 16], AGENT, "DB_PASS", VALUE),
        ),
        // Sealed for another agent id.
        (
            [0x33; 16],
            seal(&sealing_key(), [0x33; 16], [0x55; 16], "DB_PASS", VALUE),
        ),
    ];
    for (id, value) in cases {
        let sealed = SealedEnv {
            entries: vec![value],
        };
        let (result, events) = run_dispatch(&f.engine, &secret_dispatch(id, &spec, &sealed)).await;
        assert_eq!(result.end, JobEnd::Refused);
        let error = result.error.unwrap();
        assert!(error.contains("DB_PASS"), "{error}");
        assert!(!error.contains(VALUE), "{error}");
        assert!(result.stdout.is_empty() && events.is_empty(), "nothing ran");
    }

    // A grant for another agent is refused before anything is opened.
    let id = [0x34; 16];
    let sealed = SealedEnv {
        entries: vec![seal(&sealing_key(), id, [0x55; 16], "DB_PASS", VALUE)],
    };
    let d = signed_with_sealed(
        &server_key(),
        id,
        [0x55; 16],
        &spec,
        Some(now_ms() + 60_000),
        Some(&sealed),
    );
    assert!(refusal(&f.engine, &d).contains("another agent"));
    // A sealed env that is not the one the grant signed for is refused at the ack.
    let mut swapped = secret_dispatch(id, &spec, &sealed);
    swapped.sealed = SealedEnv {
        entries: vec![seal(&sealing_key(), id, AGENT, "DB_PASS", "other")],
    }
    .to_bytes()
    .unwrap();
    assert!(refusal(&f.engine, &swapped).contains("sealed"));
}
