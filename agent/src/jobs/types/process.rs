//! `process_list` (every process, with CPU and memory use) and `process_kill` (SIGTERM, then
//! SIGKILL after a grace period).

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reap3r_wire::MAX_RESULT_DATA_BYTES;
use serde_json::{Value, json};
use tracing::info;

use super::{capped_array, truncation_note};
use crate::jobs::ctx::{JobCtx, Outcome, truncate_text};
use crate::jobs::runner::process_alive;

/// Longest command line kept per process in a process list.
const MAX_CMD_BYTES: usize = 4096;
/// How long `process_kill` waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

fn lossy_join(parts: &[std::ffi::OsString]) -> String {
    let joined = parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    truncate_text(joined, MAX_CMD_BYTES)
}

fn list_processes() -> Result<Vec<Value>, String> {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
    let mut sys = System::new().map_err(|e| format!("cannot read processes: {e}"))?;
    let kind = ProcessRefreshKind::nothing()
        .with_memory()
        .with_cpu()
        .with_cmd(UpdateKind::OnlyIfNotSet)
        .with_user(UpdateKind::OnlyIfNotSet);
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    // CPU use is measured between two refreshes.
    std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    let mut procs: Vec<_> = sys.processes().values().collect();
    procs.sort_by_key(|p| p.pid().as_u32());
    Ok(procs
        .into_iter()
        .map(|p| {
            json!({
                "pid": p.pid().as_u32(),
                "ppid": p.parent().map(|pp| pp.as_u32()),
                "name": p.name().to_string_lossy(),
                "cmd": lossy_join(p.cmd()),
                "user_id": p.user_id().map(|u| **u),
                "cpu_percent": (f64::from(p.cpu_usage()) * 100.0).round() / 100.0,
                "memory_bytes": p.memory(),
                "status": p.status().to_string(),
            })
        })
        .collect())
}

pub(super) async fn process_list(ctx: &mut JobCtx<'_>) -> Outcome {
    ctx.started(None);
    match ctx.blocking(list_processes).await {
        Ok(Ok(Ok(list))) => {
            let (data, kept, total) = capped_array(list, MAX_RESULT_DATA_BYTES);
            let mut outcome = Outcome::succeeded(Some(data));
            outcome.error = truncation_note("process list", kept, total);
            outcome
        }
        Ok(Ok(Err(err)) | Err(err)) => Outcome::failed(err),
        Err(why) => Outcome::interrupted(why, ctx.timeout_s),
    }
}

pub(super) async fn process_kill(ctx: &mut JobCtx<'_>, pid: u32) -> Outcome {
    if pid <= 1 {
        return Outcome::refused(format!("refusing to kill pid {pid}"));
    }
    if pid == std::process::id() {
        return Outcome::refused("refusing to kill the agent itself");
    }
    let Ok(raw) = i32::try_from(pid) else {
        return Outcome::refused(format!("pid {pid} is out of range"));
    };
    ctx.started(None);
    let target = Pid::from_raw(raw);
    match kill(target, Signal::SIGTERM) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return Outcome::failed(format!("no process with pid {pid}")),
        Err(err) => return Outcome::failed(format!("cannot signal pid {pid}: {err}")),
    }
    info!(job_id = %uuid::Uuid::from_bytes(ctx.job_id), pid, "sent SIGTERM");
    let gone = |limit: Duration| async move {
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until {
            if !process_alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        !process_alive(pid)
    };
    let terminated = match ctx.interruptible(gone(TERM_GRACE)).await {
        Ok(done) => done,
        Err(why) => return Outcome::interrupted(why, ctx.timeout_s),
    };
    let signal = if terminated {
        "SIGTERM"
    } else {
        if let Err(err) = kill(target, Signal::SIGKILL)
            && err != Errno::ESRCH
        {
            return Outcome::failed(format!("cannot SIGKILL pid {pid}: {err}"));
        }
        match ctx.interruptible(gone(Duration::from_secs(2))).await {
            Ok(true) => {}
            Ok(false) => {
                return Outcome::failed(format!("pid {pid} is still running after SIGKILL"));
            }
            Err(why) => return Outcome::interrupted(why, ctx.timeout_s),
        }
        "SIGKILL"
    };
    Outcome::succeeded(Some(json!({"pid": pid, "signal": signal}).to_string()))
}
