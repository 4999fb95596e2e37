//! What a job handler works with ([`JobCtx`]: deadline, stop signal, event stream, the ledger)
//! and what it produces ([`Outcome`]).

use std::future::Future;

use reap3r_wire::{JobEnd, JobResult};
use tokio::process::Command;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::Shared;
use super::ledger::{JobState, ProcessRecord};
use super::runner::{
    self, Ending, Events, JobEvent, ProcessRun, RunLimits, Stop, StopRx, describe_exit,
};
use crate::link::now_ms;

/// Longest `error` text in a result.
const MAX_ERROR_BYTES: usize = 2048;

/// Why an in-process step did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupted {
    TimedOut,
    Stopped(Stop),
}

/// How a job ended, before it becomes a [`JobResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub end: JobEnd,
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub data: Option<String>,
    pub error: Option<String>,
}

impl Outcome {
    pub(crate) fn new(end: JobEnd) -> Self {
        Self {
            end,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            data: None,
            error: None,
        }
    }

    pub(crate) fn refused(reason: impl Into<String>) -> Self {
        Self::failing(JobEnd::Refused, reason)
    }

    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        Self::failing(JobEnd::Failed, reason)
    }

    fn failing(end: JobEnd, reason: impl Into<String>) -> Self {
        let mut outcome = Self::new(end);
        outcome.error = Some(reason.into());
        outcome
    }

    pub(crate) fn succeeded(data: Option<String>) -> Self {
        let mut outcome = Self::new(JobEnd::Succeeded);
        outcome.data = data;
        outcome
    }

    pub(crate) fn interrupted(why: Interrupted, timeout_s: u32) -> Self {
        match why {
            Interrupted::TimedOut => {
                Self::failing(JobEnd::TimedOut, format!("timed out after {timeout_s} s"))
            }
            Interrupted::Stopped(Stop::Cancel) => Self::failing(JobEnd::Cancelled, "cancelled"),
            Interrupted::Stopped(Stop::Shutdown) => {
                Self::failed("agent stopped while the job was running")
            }
        }
    }

    /// A process run as a result: exit 0 succeeds, anything else fails.
    pub(crate) fn from_run(run: ProcessRun, timeout_s: u32) -> Self {
        let mut outcome = match run.ending {
            Ending::Exited(status) => {
                let (code, error) = describe_exit(status);
                let mut o = Self::new(if code == Some(0) {
                    JobEnd::Succeeded
                } else {
                    JobEnd::Failed
                });
                o.exit_code = code;
                o.error = error;
                o
            }
            Ending::TimedOut => {
                let mut o = Self::interrupted(Interrupted::TimedOut, timeout_s);
                o.error = Some(format!(
                    "timed out after {timeout_s} s; the process group was killed"
                ));
                o
            }
            Ending::Stopped(Stop::Cancel) => {
                Self::failing(JobEnd::Cancelled, "cancelled; the process group was killed")
            }
            Ending::Stopped(reason) => Self::interrupted(Interrupted::Stopped(reason), timeout_s),
            Ending::SpawnFailed(err) => Self::failed(err),
        };
        outcome.stdout_truncated = run.stdout.truncated();
        outcome.stderr_truncated = run.stderr.truncated();
        outcome.stdout = run.stdout.into_bytes();
        outcome.stderr = run.stderr.into_bytes();
        outcome
    }

    pub(crate) fn into_result(
        self,
        job_id: [u8; 16],
        started_at_ms: u64,
        finished_at_ms: u64,
    ) -> JobResult {
        JobResult {
            job_id,
            end: self.end,
            exit_code: self.exit_code,
            stdout: self.stdout,
            stderr: self.stderr,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            data: self.data,
            error: self.error.map(|e| truncate_text(e, MAX_ERROR_BYTES)),
            started_at_ms,
            finished_at_ms,
        }
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub(crate) fn truncate_text(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// One running job as its handler sees it.
pub(crate) struct JobCtx<'a> {
    pub shared: &'a Shared,
    pub job_id: [u8; 16],
    pub timeout_s: u32,
    pub deadline: Instant,
    stop: StopRx,
    events: Events,
    started_at_ms: Option<u64>,
    /// The job's opened secret values: masked in the output of every process it runs.
    /// Zeroized when the job ends.
    pub secrets: Vec<Zeroizing<Vec<u8>>>,
}

impl<'a> JobCtx<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        job_id: [u8; 16],
        timeout_s: u32,
        stop: StopRx,
        events: Events,
    ) -> Self {
        let timeout_s = timeout_s.clamp(1, reap3r_wire::MAX_JOB_TIMEOUT_S);
        Self {
            shared,
            job_id,
            timeout_s,
            deadline: Instant::now() + std::time::Duration::from_secs(u64::from(timeout_s)),
            stop,
            events,
            started_at_ms: None,
            secrets: Vec::new(),
        }
    }

    pub(crate) fn started_at_ms(&self) -> Option<u64> {
        self.started_at_ms
    }

    /// Records that the job is running (with its process, if it has one) and, the first time,
    /// reports `JobStarted`.
    pub(crate) fn started(&mut self, process: Option<ProcessRecord>) {
        mark_started(
            self.shared,
            &self.job_id,
            &mut self.started_at_ms,
            &self.events,
            process,
        );
    }

    /// Runs a process under the job's deadline and stop signal; the job counts as started once
    /// it is spawned.
    pub(crate) async fn run(
        &mut self,
        cmd: &mut Command,
        stream: bool,
        stdout_cap: usize,
        stderr_cap: usize,
    ) -> ProcessRun {
        let Self {
            shared,
            job_id,
            stop,
            events,
            started_at_ms,
            secrets,
            deadline,
            ..
        } = self;
        let limits = RunLimits {
            deadline: *deadline,
            stdout_cap,
            stderr_cap,
            stream,
            secrets,
        };
        let shared: &Shared = shared;
        let events: &Events = events;
        let mut on_spawn = |pid: u32| {
            let record = ProcessRecord {
                pid,
                pgid: pid,
                start_ticks: runner::proc_stat(pid).map(|(_, start)| start),
            };
            mark_started(shared, job_id, started_at_ms, events, Some(record));
        };
        runner::run_process(cmd, limits, stop, Some(events), &mut on_spawn).await
    }

    /// Whether the job has passed its deadline or was told to stop.
    pub(crate) fn check(&self) -> Result<(), Interrupted> {
        if let Some(reason) = *self.stop.borrow() {
            return Err(Interrupted::Stopped(reason));
        }
        if Instant::now() >= self.deadline {
            return Err(Interrupted::TimedOut);
        }
        Ok(())
    }

    /// Awaits `fut` unless the deadline passes or the job is stopped first.
    pub(crate) async fn interruptible<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> Result<T, Interrupted> {
        if let Some(reason) = *self.stop.borrow() {
            return Err(Interrupted::Stopped(reason));
        }
        tokio::select! {
            biased;
            value = fut => Ok(value),
            _ = tokio::time::sleep_until(self.deadline) => Err(Interrupted::TimedOut),
            reason = runner::stopped(&mut self.stop) => Err(Interrupted::Stopped(reason)),
        }
    }

    /// Runs blocking work (sysinfo scans) off the async thread, interruptibly.
    pub(crate) async fn blocking<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Result<T, String>, Interrupted> {
        let task = tokio::task::spawn_blocking(work);
        self.interruptible(async { task.await.map_err(|e| e.to_string()) })
            .await
    }
}

fn mark_started(
    shared: &Shared,
    job_id: &[u8; 16],
    started_at_ms: &mut Option<u64>,
    events: &Events,
    process: Option<ProcessRecord>,
) {
    let first = started_at_ms.is_none();
    let at = *started_at_ms.get_or_insert_with(now_ms);
    let id = uuid::Uuid::from_bytes(*job_id);
    let pid = process.as_ref().map(|p| p.pid);
    if let Err(err) = shared.ledger.set_state(
        job_id,
        JobState::Running {
            started_at_ms: at,
            process,
        },
    ) {
        warn!(job_id = %id, %err, "cannot record the running job");
    }
    if first {
        info!(job_id = %id, ?pid, "job started");
        let _ = events.send(JobEvent::Started { started_at_ms: at });
    } else {
        debug!(job_id = %id, ?pid, "job started another process");
    }
}
