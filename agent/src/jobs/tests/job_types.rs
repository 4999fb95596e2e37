//! Every job type but `run_script` through the engine: process list and kill, config update,
//! power commands, inventory, services, and the capabilities advertised for them.

use super::*;

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
