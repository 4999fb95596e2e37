//! `run_script`: the script is checked, written to a file of its own (removed when the job
//! ends) and run by the interpreter it names. Its secrets are opened with the agent's sealing
//! key, in memory only: they go into the child's environment and into the output maskers,
//! never into a log, the ledger, the outbox or an error (which names a variable, never a value).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use reap3r_wire::{MAX_SCRIPT_BYTES, ScriptJob, SealedEnv, open_value};
use tokio::process::Command;
use zeroize::Zeroizing;

use super::{STDERR_CAP, STDOUT_CAP};
use crate::jobs::ctx::{JobCtx, Outcome};

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

/// An opened secret: its variable's name and its value, zeroized when dropped.
pub(super) type Secret = (String, Zeroizing<Vec<u8>>);

/// Opens each sealed value for this job and agent: (name, value) pairs, zeroized when dropped.
/// A value that does not open, or that an environment cannot carry (NUL), refuses the job.
pub(super) fn open_secrets(
    ctx: &JobCtx<'_>,
    sealed: Option<&SealedEnv>,
) -> Result<Vec<Secret>, String> {
    let Some(sealed) = sealed else {
        return Ok(Vec::new());
    };
    let mut opened = Vec::with_capacity(sealed.entries.len());
    for entry in &sealed.entries {
        let value = open_value(
            &ctx.shared.sealing,
            &ctx.job_id,
            &ctx.shared.agent_id,
            entry,
        )
        .map_err(|_| {
            format!(
                "secret {} does not open with this agent's sealing key",
                entry.name
            )
        })?;
        if value.contains(&0) {
            return Err(format!(
                "secret {} contains a NUL byte and cannot be an environment variable",
                entry.name
            ));
        }
        opened.push((entry.name.clone(), value));
    }
    Ok(opened)
}

pub(super) async fn run_script(
    ctx: &mut JobCtx<'_>,
    job: &ScriptJob,
    sealed: Option<&SealedEnv>,
) -> Outcome {
    let interpreter = match check_script(ctx, job) {
        Ok(path) => path,
        Err(reason) => return Outcome::refused(reason),
    };
    let secrets = match open_secrets(ctx, sealed) {
        Ok(secrets) => secrets,
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
    // Only the child's environment gets the values (the `Command` keeps its own copy until it
    // is dropped at the end of this job); the maskers get them to hide them in the output.
    for (name, value) in &secrets {
        cmd.env(name, OsStr::from_bytes(value));
    }
    ctx.secrets = secrets.into_iter().map(|(_, value)| value).collect();
    if let Some(dir) = &job.working_dir {
        cmd.current_dir(dir);
    }
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, true, STDOUT_CAP, STDERR_CAP).await;
    drop(file);
    drop(cmd);
    ctx.secrets.clear();
    Outcome::from_run(run, timeout_s)
}
