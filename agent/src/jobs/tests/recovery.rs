//! What a restart makes of jobs the ledger holds unfinished: a failed result in the outbox
//! (the leftover process group killed, a reused pid spared), or success for a reboot that
//! restarted the system.

use super::*;

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
