//! One handler per job type. Each checks what it was given (a bad request is a `Refused`
//! result), reports the start, does the work within the deadline, and returns an [`Outcome`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reap3r_wire::{
    AgentConfig, JobPayload, MAX_RESULT_DATA_BYTES, MAX_SCRIPT_BYTES, MAX_STDERR_BYTES,
    MAX_STDOUT_BYTES, ScriptJob, ServiceVerb,
};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::oneshot;
use tracing::info;

use super::ConfigRequest;
use super::ctx::{JobCtx, Outcome, truncate_text};
use super::runner::process_alive;

const STDOUT_CAP: usize = MAX_STDOUT_BYTES as usize;
const STDERR_CAP: usize = MAX_STDERR_BYTES as usize;
/// Output of a command the agent parses itself (unit and package lists) is read up to this.
const PARSE_CAP: usize = 4 * 1024 * 1024;
/// Longest command line kept per process in a process list.
const MAX_CMD_BYTES: usize = 4096;
/// How long `process_kill` waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn execute(ctx: &mut JobCtx<'_>, payload: &JobPayload) -> Outcome {
    match payload {
        JobPayload::RunScript(script) => run_script(ctx, script).await,
        JobPayload::ProcessList => process_list(ctx).await,
        JobPayload::ProcessKill { pid } => process_kill(ctx, *pid).await,
        JobPayload::ServiceList => service_list(ctx).await,
        JobPayload::ServiceAction { service, action } => {
            service_action(ctx, service, *action).await
        }
        JobPayload::CollectInventory => collect_inventory(ctx).await,
        JobPayload::ConfigUpdate(config) => config_update(ctx, *config).await,
        JobPayload::Reboot { delay_s } => power(ctx, "-r", *delay_s).await,
        JobPayload::Shutdown { delay_s } => power(ctx, "-h", *delay_s).await,
    }
}

// ---------------------------------------------------------------------------------------------
// run_script

/// The script file, removed when the job ends.
struct ScriptFile(PathBuf);

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_script(
    dir: &Path,
    job_id: &[u8; 16],
    ext: &str,
    text: &str,
) -> std::io::Result<ScriptFile> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(format!("{}.{ext}", uuid::Uuid::from_bytes(*job_id)));
    let _ = std::fs::remove_file(&path);
    let file = ScriptFile(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&file.0)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(file)
}

fn check_script(ctx: &JobCtx<'_>, job: &ScriptJob) -> Result<PathBuf, String> {
    let interpreter = ctx
        .shared
        .caps
        .interpreter(&job.interpreter)
        .ok_or_else(|| {
            format!(
                "interpreter {:?} is not available on this agent",
                job.interpreter
            )
        })?;
    if job.script.len() > MAX_SCRIPT_BYTES {
        return Err(format!(
            "script of {} bytes exceeds the limit of {MAX_SCRIPT_BYTES}",
            job.script.len()
        ));
    }
    if let Some(dir) = &job.working_dir
        && !Path::new(dir).is_dir()
    {
        return Err(format!("working directory {dir:?} does not exist"));
    }
    for (key, value) in &job.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(format!("invalid environment variable {key:?}"));
        }
    }
    if job.args.iter().any(|a| a.contains('\0')) || job.script.contains('\0') {
        return Err("arguments and script may not contain NUL bytes".into());
    }
    Ok(interpreter.to_path_buf())
}

async fn run_script(ctx: &mut JobCtx<'_>, job: &ScriptJob) -> Outcome {
    let interpreter = match check_script(ctx, job) {
        Ok(path) => path,
        Err(reason) => return Outcome::refused(reason),
    };
    let ext = match job.interpreter.as_str() {
        "python3" => "py",
        "pwsh" => "ps1",
        _ => "sh",
    };
    let dir = ctx.shared.data_dir.join("scripts");
    let file = match write_script(&dir, &ctx.job_id, ext, &job.script) {
        Ok(file) => file,
        Err(err) => return Outcome::failed(format!("cannot write the script file: {err}")),
    };
    let mut cmd = Command::new(&interpreter);
    if job.interpreter == "pwsh" {
        cmd.args(["-NoLogo", "-NoProfile", "-NonInteractive", "-File"]);
    }
    cmd.arg(&file.0).args(&job.args);
    cmd.envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(dir) = &job.working_dir {
        cmd.current_dir(dir);
    }
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, true, STDOUT_CAP, STDERR_CAP).await;
    drop(file);
    Outcome::from_run(run, timeout_s)
}

// ---------------------------------------------------------------------------------------------
// Structured data

/// Serialises `items` as a JSON array of at most `cap` bytes; returns it with how many items it
/// holds and how many there were.
fn capped_array(items: impl IntoIterator<Item = Value>, cap: usize) -> (String, usize, usize) {
    let mut out = String::from("[");
    let (mut kept, mut total, mut full) = (0, 0, false);
    for item in items {
        total += 1;
        if full {
            continue;
        }
        let text = item.to_string();
        let extra = text.len() + usize::from(kept > 0);
        if out.len() + extra + 1 > cap {
            full = true;
            continue;
        }
        if kept > 0 {
            out.push(',');
        }
        out.push_str(&text);
        kept += 1;
    }
    out.push(']');
    (out, kept, total)
}

fn truncation_note(what: &str, kept: usize, total: usize) -> Option<String> {
    (kept < total).then(|| format!("{what} truncated to {kept} of {total} entries (data is capped at {MAX_RESULT_DATA_BYTES} bytes)"))
}

fn lossy_join(parts: &[std::ffi::OsString]) -> String {
    let joined = parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    truncate_text(joined, MAX_CMD_BYTES)
}

// ---------------------------------------------------------------------------------------------
// process_list

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

async fn process_list(ctx: &mut JobCtx<'_>) -> Outcome {
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

// ---------------------------------------------------------------------------------------------
// process_kill

async fn process_kill(ctx: &mut JobCtx<'_>, pid: u32) -> Outcome {
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

// ---------------------------------------------------------------------------------------------
// service_list / service_action

/// Parses `systemctl list-units --no-legend --plain` lines: unit, load, active, sub, description.
pub(crate) fn parse_units(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().peekable();
            // Some versions still mark failed units with a bullet.
            if fields
                .peek()
                .is_some_and(|f| !f.chars().any(|c| c.is_ascii_alphanumeric()))
            {
                fields.next();
            }
            let name = fields.next()?;
            let load = fields.next()?;
            let active = fields.next()?;
            let sub = fields.next()?;
            let description = fields.collect::<Vec<_>>().join(" ");
            Some(json!({
                "name": name,
                "load": load,
                "active": active,
                "sub": sub,
                "description": description,
            }))
        })
        .collect()
}

/// A unit name systemctl will take as a name, never as an option.
pub(crate) fn valid_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._:-".contains(&b))
}

async fn service_list(ctx: &mut JobCtx<'_>) -> Outcome {
    let Some(systemctl) = ctx.shared.caps.systemctl.clone() else {
        return Outcome::refused("systemctl is not available on this agent");
    };
    let mut cmd = Command::new(systemctl);
    cmd.args([
        "list-units",
        "--type=service",
        "--all",
        "--no-legend",
        "--no-pager",
        "--plain",
    ]);
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, false, PARSE_CAP, STDERR_CAP).await;
    let mut outcome = Outcome::from_run(run, timeout_s);
    if outcome.end == reap3r_wire::JobEnd::Succeeded {
        let units = parse_units(&String::from_utf8_lossy(&outcome.stdout));
        let (data, kept, total) = capped_array(units, MAX_RESULT_DATA_BYTES);
        outcome.data = Some(data);
        outcome.error = truncation_note("service list", kept, total);
        outcome.stdout.clear();
        outcome.stdout_truncated = false;
    } else if outcome.stdout.len() > STDOUT_CAP {
        outcome.stdout.truncate(STDOUT_CAP);
        outcome.stdout_truncated = true;
    }
    outcome
}

async fn service_action(ctx: &mut JobCtx<'_>, service: &str, action: ServiceVerb) -> Outcome {
    let Some(systemctl) = ctx.shared.caps.systemctl.clone() else {
        return Outcome::refused("systemctl is not available on this agent");
    };
    if !valid_unit_name(service) {
        return Outcome::refused(format!("invalid service name {service:?}"));
    }
    let mut cmd = Command::new(systemctl);
    cmd.args(["--no-pager", action.as_str(), service]);
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, true, STDOUT_CAP, STDERR_CAP).await;
    Outcome::from_run(run, timeout_s)
}

// ---------------------------------------------------------------------------------------------
// collect_inventory

fn host_facts() -> Value {
    use sysinfo::{Disks, Networks, System};
    let sys = System::new().ok().map(|mut s| {
        s.refresh_memory();
        s.refresh_cpu_all();
        s
    });
    let disks: Vec<Value> = Disks::new_with_refreshed_list()
        .map(|disks| {
            disks
                .iter()
                .map(|d| {
                    json!({
                        "mount": d.mount_point().to_string_lossy(),
                        "fs": d.file_system().to_string_lossy(),
                        "total_bytes": d.total_space(),
                        "available_bytes": d.available_space(),
                        "removable": d.is_removable(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut interfaces: Vec<Value> = Networks::new_with_refreshed_list()
        .map(|nets| {
            nets.iter()
                .map(|(name, n)| {
                    let mac = n.mac_address();
                    json!({
                        "name": name,
                        "macs": if mac.is_unspecified() { vec![] } else { vec![mac.to_string()] },
                        "ips": n.ip_networks().iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
                        "rx_bytes": n.total_received(),
                        "tx_bytes": n.total_transmitted(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "os": {
            "name": System::name().unwrap_or_default(),
            "version": System::os_version().unwrap_or_default(),
            "long_version": System::long_os_version().unwrap_or_default(),
            "kernel": System::kernel_version().unwrap_or_default(),
            "hostname": crate::inventory::hostname(),
            "arch": System::cpu_arch(),
            "boot_time_s": System::boot_time().unwrap_or_default(),
            "uptime_s": System::uptime().unwrap_or_default(),
        },
        "cpu": {
            "model": sys.as_ref().and_then(|s| s.cpus().first().map(|c| c.brand().to_string())).unwrap_or_default(),
            "cores": sys.as_ref().map(|s| s.cpus().len()).unwrap_or_default(),
            "physical_cores": System::physical_core_count().ok(),
        },
        "memory": {
            "total_bytes": sys.as_ref().map(|s| s.total_memory()).unwrap_or_default(),
            "available_bytes": sys.as_ref().map(|s| s.available_memory()).unwrap_or_default(),
            "swap_total_bytes": sys.as_ref().map(|s| s.total_swap()).unwrap_or_default(),
        },
        "disks": disks,
        "network": interfaces,
    })
}

/// `name\tversion` lines (dpkg lines start with the status, kept only if installed).
pub(crate) fn parse_packages(text: &str, with_status: bool) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            if with_status && !fields.next()?.starts_with("ii") {
                return None;
            }
            let name = fields.next()?.trim();
            let version = fields.next().unwrap_or("").trim();
            (!name.is_empty()).then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

async fn installed_packages(ctx: &mut JobCtx<'_>) -> Value {
    let caps = &ctx.shared.caps;
    let (manager, mut cmd, with_status) = if let Some(dpkg) = &caps.dpkg_query {
        let mut cmd = Command::new(dpkg);
        cmd.args([
            "-W",
            "--showformat=${db:Status-Abbrev}\t${Package}\t${Version}\n",
        ]);
        ("dpkg", cmd, true)
    } else if let Some(rpm) = &caps.rpm {
        let mut cmd = Command::new(rpm);
        cmd.args(["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"]);
        ("rpm", cmd, false)
    } else {
        return json!({"manager": null, "items": []});
    };
    let run = ctx.run(&mut cmd, false, PARSE_CAP, STDERR_CAP).await;
    let timeout_s = ctx.timeout_s;
    let outcome = Outcome::from_run(run, timeout_s);
    if outcome.end != reap3r_wire::JobEnd::Succeeded {
        let reason = outcome.error.unwrap_or_else(|| {
            truncate_text(String::from_utf8_lossy(&outcome.stderr).into_owned(), 512)
        });
        return json!({"manager": manager, "items": [], "error": reason});
    }
    let mut packages = parse_packages(&String::from_utf8_lossy(&outcome.stdout), with_status);
    packages.sort();
    packages.dedup();
    json!({
        "manager": manager,
        "items": packages.into_iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
    })
}

/// Fits the inventory into `cap` bytes, cutting the package list first, then the network and
/// disk lists. Returns the JSON and what was cut.
pub(crate) fn cap_inventory(mut inv: Value, cap: usize) -> (String, Option<String>) {
    let text = inv.to_string();
    if text.len() <= cap {
        return (text, None);
    }
    let mut notes = Vec::new();
    for path in [["packages", "items"], ["network", ""], ["disks", ""]] {
        let taken = {
            let slot = if path[1].is_empty() {
                inv.get_mut(path[0])
            } else {
                inv.get_mut(path[0]).and_then(|v| v.get_mut(path[1]))
            };
            match slot {
                Some(Value::Array(items)) => std::mem::take(items),
                _ => continue,
            }
        };
        let base = inv.to_string().len();
        let (array, kept, total) = capped_array(taken, cap.saturating_sub(base + 64));
        let fitted: Value = serde_json::from_str(&array).unwrap_or(Value::Array(vec![]));
        let slot = if path[1].is_empty() {
            inv.get_mut(path[0])
        } else {
            inv.get_mut(path[0]).and_then(|v| v.get_mut(path[1]))
        };
        if let Some(slot) = slot {
            *slot = fitted;
        }
        if kept < total {
            let name = if path[1].is_empty() {
                path[0]
            } else {
                "packages"
            };
            notes.push(format!("{name} truncated to {kept} of {total}"));
        }
        let text = inv.to_string();
        if text.len() <= cap {
            return (
                text,
                Some(format!("inventory truncated: {}", notes.join(", "))),
            );
        }
    }
    // Only the fixed facts are left and they still do not fit: send a minimal document.
    let text = json!({"error": "inventory too large"}).to_string();
    (text, Some("inventory too large to send".into()))
}

async fn collect_inventory(ctx: &mut JobCtx<'_>) -> Outcome {
    ctx.started(None);
    let mut inv = match ctx.blocking(host_facts).await {
        Ok(Ok(facts)) => facts,
        Ok(Err(err)) => return Outcome::failed(err),
        Err(why) => return Outcome::interrupted(why, ctx.timeout_s),
    };
    let packages = installed_packages(ctx).await;
    if let Err(why) = ctx.check() {
        return Outcome::interrupted(why, ctx.timeout_s);
    }
    if let Some(obj) = inv.as_object_mut() {
        obj.insert("packages".into(), packages);
    }
    let (data, note) = cap_inventory(inv, MAX_RESULT_DATA_BYTES);
    let mut outcome = Outcome::succeeded(Some(data));
    outcome.error = note;
    outcome
}

// ---------------------------------------------------------------------------------------------
// config_update

async fn config_update(ctx: &mut JobCtx<'_>, config: AgentConfig) -> Outcome {
    ctx.started(None);
    let (reply, answer) = oneshot::channel();
    if ctx
        .shared
        .config_tx
        .send(ConfigRequest { config, reply })
        .is_err()
    {
        return Outcome::failed("the agent is stopping");
    }
    match ctx.interruptible(answer).await {
        Ok(Ok(Ok(applied))) => Outcome::succeeded(Some(
            json!({
                "heartbeat_interval_s": applied.heartbeat_interval_s,
                "metrics_interval_s": applied.metrics_interval_s,
            })
            .to_string(),
        )),
        Ok(Ok(Err(err))) => Outcome::failed(format!("cannot apply the configuration: {err}")),
        Ok(Err(_)) => Outcome::failed("the agent is stopping"),
        Err(why) => Outcome::interrupted(why, ctx.timeout_s),
    }
}

// ---------------------------------------------------------------------------------------------
// reboot / shutdown

/// `shutdown`'s time argument: `now`, or `+minutes` rounded up.
pub(crate) fn power_delay(delay_s: u32) -> String {
    if delay_s == 0 {
        "now".into()
    } else {
        format!("+{}", delay_s.div_ceil(60))
    }
}

async fn power(ctx: &mut JobCtx<'_>, flag: &str, delay_s: u32) -> Outcome {
    let mut cmd = Command::new(&ctx.shared.power_command);
    cmd.arg(flag).arg(power_delay(delay_s));
    info!(
        job_id = %uuid::Uuid::from_bytes(ctx.job_id),
        command = %ctx.shared.power_command,
        flag,
        delay_s,
        "running the power command"
    );
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, true, STDOUT_CAP, STDERR_CAP).await;
    Outcome::from_run(run, timeout_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        for ok in ["sshd.service", "getty@tty1.service", "a:b-c_d.e", "x"] {
            assert!(valid_unit_name(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "-H",
            "--help",
            "a b",
            "a;b",
            "a/b",
            "$(x)",
            long.as_str(),
        ] {
            assert!(!valid_unit_name(bad), "{bad}");
        }
    }

    #[test]
    fn units_parse() {
        let text = "ssh.service loaded active running OpenBSD Secure Shell server\n\
                    ● foo.service not-found inactive dead foo.service\n\
                    bad line\n";
        let units = parse_units(text);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0]["name"], "ssh.service");
        assert_eq!(units[0]["sub"], "running");
        assert_eq!(units[0]["description"], "OpenBSD Secure Shell server");
        assert_eq!(units[1]["name"], "foo.service");
        assert_eq!(units[1]["load"], "not-found");
    }

    #[test]
    fn packages_parse() {
        let dpkg = "ii \tbash\t5.2-1\nrc \told\t1.0\nii \tzlib1g\t1:1.2\n";
        assert_eq!(
            parse_packages(dpkg, true),
            vec![
                ("bash".to_string(), "5.2-1".to_string()),
                ("zlib1g".to_string(), "1:1.2".to_string())
            ]
        );
        assert_eq!(parse_packages("a\t1-2\n", false).len(), 1);
    }

    #[test]
    fn arrays_are_capped() {
        let items = (0..1000).map(|i| json!({"n": i}));
        let (text, kept, total) = capped_array(items, 200);
        assert!(text.len() <= 200);
        assert_eq!(total, 1000);
        assert!(kept > 0 && kept < 1000);
        let parsed: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.len(), kept);
        assert_eq!(capped_array(Vec::new(), 10).0, "[]");
    }

    #[test]
    fn inventory_cuts_packages_first() {
        let inv = json!({
            "os": {"name": "x"},
            "disks": [{"mount": "/"}],
            "network": [{"name": "lo"}],
            "packages": {"manager": "dpkg", "items": (0..5000).map(|i| json!({"name": format!("pkg{i}"), "version": "1.0"})).collect::<Vec<_>>()},
        });
        let (text, note) = cap_inventory(inv, 4096);
        assert!(text.len() <= 4096);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["network"][0]["name"], "lo");
        assert!(!v["packages"]["items"].as_array().unwrap().is_empty());
        assert!(note.unwrap().contains("packages truncated"));
    }

    #[test]
    fn power_delays() {
        assert_eq!(power_delay(0), "now");
        assert_eq!(power_delay(1), "+1");
        assert_eq!(power_delay(60), "+1");
        assert_eq!(power_delay(61), "+2");
    }
}
