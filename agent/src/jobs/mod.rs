//! The agent side of the job engine (docs/JOBS.md): grant verification, the ledger and outbox,
//! running jobs, and getting their results to the server exactly once.
//!
//! A job outlives the connection it was dispatched on: jobs run in tasks owned by the
//! [`JobEngine`] (created by `run`), not by the connection. Its live output goes to the stream
//! it came on while that stream lasts; its result is put in the outbox first, then sent on that
//! stream, or on a uni stream of the current connection if the stream is gone, or after the next
//! `Welcome` if the agent is offline.

mod caps;
mod ctx;
mod ledger;
mod runner;
mod types;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use reap3r_wire::{
    AgentConfig, JobAck, JobAckOutcome, JobDispatch, JobOutput, JobResult, Message, VerifiedJob,
    VerifyingKey,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::AgentError;
use crate::link::{Link, now_ms};
use crate::transport::write_frame;
use caps::Capabilities;
use ctx::{JobCtx, Outcome};
use ledger::{Entry, JobState, Ledger, ProcessRecord};
use runner::{JobEvent, Stop};

/// Clock difference allowed when checking a grant's expiry.
const GRANT_SKEW_MS: u64 = 300_000;
/// Most `JobOutput` frames sent live for one job (the server reads at most 1024 frames from a
/// job stream); the output past it is still in the result.
const MAX_LIVE_OUTPUT_FRAMES: usize = 900;
/// How long shutdown waits for stopped jobs to record their results.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

pub(crate) const RESTARTED_WHILE_RUNNING: &str = "agent restarted while the job was running";
const RESTARTED_BEFORE_START: &str = "agent restarted before the job started";

/// A `config_update` job asks the session to apply a configuration, as a `ConfigUpdate` would.
pub(crate) struct ConfigRequest {
    pub config: AgentConfig,
    pub reply: oneshot::Sender<Result<AgentConfig, String>>,
}

/// What the engine needs to know about the agent.
#[derive(Debug, Clone)]
pub(crate) struct EngineOptions {
    pub data_dir: PathBuf,
    pub agent_id: [u8; 16],
    pub server_key: VerifyingKey,
    /// Run as `<cmd> -r|-h <when>` by reboot and shutdown jobs.
    pub power_command: String,
}

/// State shared by the engine and its job tasks.
pub(crate) struct Shared {
    pub ledger: Ledger,
    pub caps: Capabilities,
    pub data_dir: PathBuf,
    pub power_command: String,
    pub config_tx: mpsc::UnboundedSender<ConfigRequest>,
    agent_id: [u8; 16],
    server_key: VerifyingKey,
    boot_id: String,
    /// Stop switches of the jobs accepted and not yet finished.
    running: Mutex<HashMap<[u8; 16], watch::Sender<Option<Stop>>>>,
    /// The current connection, between `Welcome` and its end.
    link: Mutex<Option<Link>>,
    replay: Mutex<Option<AbortHandle>>,
    tasks: Mutex<JoinSet<()>>,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn job_uuid(id: &[u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id)
}

/// The agent's job engine; one per `run`.
pub(crate) struct JobEngine {
    shared: Arc<Shared>,
}

/// What to do with a dispatch.
#[derive(Debug)]
enum Decision {
    Refused {
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

impl JobEngine {
    /// Opens the ledger, finds what this agent can run, and turns jobs interrupted by a restart
    /// into failed results in the outbox.
    pub(crate) fn open(
        opts: EngineOptions,
        config_tx: mpsc::UnboundedSender<ConfigRequest>,
    ) -> Result<Self, AgentError> {
        let ledger = Ledger::open(&opts.data_dir)?;
        let caps = Capabilities::detect();
        info!(capabilities = ?caps.advertised(), "job capabilities");
        let shared = Arc::new(Shared {
            ledger,
            caps,
            data_dir: opts.data_dir,
            power_command: opts.power_command,
            config_tx,
            agent_id: opts.agent_id,
            server_key: opts.server_key,
            boot_id: runner::boot_id(),
            running: Mutex::new(HashMap::new()),
            link: Mutex::new(None),
            replay: Mutex::new(None),
            tasks: Mutex::new(JoinSet::new()),
            stopping: AtomicBool::new(false),
        });
        shared.recover(now_ms())?;
        match shared.ledger.prune(now_ms()) {
            Ok(0) => {}
            Ok(n) => debug!(entries = n, "pruned old ledger entries"),
            Err(err) => warn!(%err, "cannot prune the job ledger"),
        }
        Ok(Self { shared })
    }

    /// `job:<type>` and `interpreter:<name>` capabilities for the hello.
    pub(crate) fn capabilities(&self) -> Vec<String> {
        self.shared.caps.advertised()
    }

    /// A connection is live (after `Welcome`): results go to it from now on, and everything in
    /// the outbox is sent again, each on its own uni stream.
    pub(crate) fn link_up(&self, link: Link) {
        *lock(&self.shared.link) = Some(link.clone());
        let results = match self.shared.ledger.outbox() {
            Ok(results) => results,
            Err(err) => {
                warn!(%err, "cannot read the outbox");
                return;
            }
        };
        if results.is_empty() {
            return;
        }
        info!(count = results.len(), "replaying results from the outbox");
        let task = tokio::spawn(async move {
            for result in results {
                let job_id = job_uuid(&result.job_id);
                let end = result.end.as_str();
                match link.send_uni(Message::JobResult(result)).await {
                    Ok(()) => info!(%job_id, end, "result replayed"),
                    Err(err) => {
                        warn!(%job_id, %err, "result replay interrupted; it stays in the outbox");
                        return;
                    }
                }
            }
        });
        if let Some(old) = lock(&self.shared.replay).replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// The connection ended: results wait in the outbox until the next `Welcome`.
    pub(crate) fn link_down(&self) {
        *lock(&self.shared.link) = None;
        if let Some(task) = lock(&self.shared.replay).take() {
            task.abort();
        }
    }

    /// Handles a verified `JobDispatch` envelope that arrived on `send`'s stream.
    pub(crate) fn dispatch(
        &self,
        dispatch: JobDispatch,
        send: SendStream,
        recv: RecvStream,
        link: Link,
    ) {
        let shared = self.shared.clone();
        shared.clone().spawn(async move {
            let mut sink = StreamSink::new(send, recv, link);
            match shared.decide(&dispatch, now_ms()) {
                Decision::Refused { job_id, reason } => {
                    warn!(job_id = %job_uuid(&job_id), %reason, "job refused");
                    sink.ack(job_id, JobAckOutcome::Refused(reason)).await;
                    sink.finish();
                }
                Decision::Duplicate { job_id, result } => {
                    info!(
                        job_id = %job_uuid(&job_id),
                        result_in_outbox = result.is_some(),
                        "duplicate dispatch; not running it again"
                    );
                    sink.ack(job_id, JobAckOutcome::Duplicate).await;
                    if let Some(result) = result {
                        let _ = sink.send(Message::JobResult(result)).await;
                    }
                    sink.finish();
                }
                Decision::Accepted { job, stop } => {
                    info!(
                        job_id = %job_uuid(&job.job_id),
                        job_type = job.spec.payload.type_name(),
                        timeout_s = job.spec.timeout_s,
                        "job accepted"
                    );
                    sink.ack(job.job_id, JobAckOutcome::Accepted).await;
                    shared.run_job(job, stop, Some(sink)).await;
                }
            }
        });
    }

    /// `JobCancel` from the server: kill the job's process group; it ends `Cancelled`.
    pub(crate) fn cancel(&self, job_id: [u8; 16]) {
        match lock(&self.shared.running).get(&job_id) {
            Some(stop) => {
                info!(job_id = %job_uuid(&job_id), "cancelling job");
                let _ = stop.send(Some(Stop::Cancel));
            }
            None => {
                info!(job_id = %job_uuid(&job_id), "cancel for a job that is not running; ignored")
            }
        }
    }

    /// `JobResultAck` from the server: the result is committed; drop it from the outbox.
    pub(crate) fn result_acked(&self, job_id: [u8; 16]) {
        match self.shared.ledger.ack(&job_id) {
            Ok(true) => info!(job_id = %job_uuid(&job_id), "result acknowledged"),
            Ok(false) => debug!(job_id = %job_uuid(&job_id), "ack for a result not in the outbox"),
            Err(err) => {
                warn!(job_id = %job_uuid(&job_id), %err, "cannot drop an acknowledged result")
            }
        }
    }

    /// Stops every running job (each ends `Failed`, "agent stopped") and waits a little for
    /// their results to reach the outbox (and the server, if a connection is still up). New
    /// dispatches are refused from now on.
    pub(crate) async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let stops: Vec<_> = lock(&self.shared.running).values().cloned().collect();
        if !stops.is_empty() {
            info!(count = stops.len(), "stopping running jobs");
        }
        for stop in stops {
            let _ = stop.send(Some(Stop::Shutdown));
        }
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        let drained = tokio::time::timeout(SHUTDOWN_WAIT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("some jobs did not stop in time");
        }
    }
}

impl Drop for JobEngine {
    /// Job tasks hold the shared state, so they would outlive the engine: abort them.
    fn drop(&mut self) {
        lock(&self.shared.tasks).abort_all();
        if let Some(task) = lock(&self.shared.replay).take() {
            task.abort();
        }
    }
}

impl Shared {
    fn spawn(self: Arc<Self>, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    fn current_link(&self) -> Option<Link> {
        lock(&self.link).clone().filter(|l| !l.is_closed())
    }

    /// Verifies the grant and records the job, or says why not.
    fn decide(&self, dispatch: &JobDispatch, now_ms: u64) -> Decision {
        let claimed = dispatch.claimed_job_id().unwrap_or_default();
        let job = match dispatch.verify(&self.server_key, &self.agent_id, now_ms, GRANT_SKEW_MS) {
            Ok(job) => job,
            Err(refusal) => {
                return Decision::Refused {
                    job_id: claimed,
                    reason: refusal.to_string(),
                };
            }
        };
        let job_id = job.job_id;
        if self.stopping.load(Ordering::SeqCst) {
            return Decision::Refused {
                job_id,
                reason: "the agent is stopping".into(),
            };
        }
        let entry = Entry {
            job_type: job.spec.payload.type_name().into(),
            accepted_at_ms: now_ms,
            expires_at_ms: job.grant.expires_at_ms,
            boot_id: self.boot_id.clone(),
            state: JobState::Accepted,
        };
        // The stop switch is registered under the same lock as the ledger write, so a cancel
        // can never find the job recorded but not cancellable.
        let mut running = lock(&self.running);
        match self.ledger.accept(&job_id, &entry) {
            Ok(true) => {
                let (tx, stop) = watch::channel(None);
                running.insert(job_id, tx);
                Decision::Accepted { job, stop }
            }
            Ok(false) => Decision::Duplicate {
                job_id,
                result: self.ledger.outbox_get(&job_id).ok().flatten(),
            },
            Err(err) => Decision::Refused {
                job_id,
                reason: format!("cannot record the job: {err}"),
            },
        }
    }

    /// Runs an accepted job to its result, streaming to `sink` while it can, then delivers the
    /// result.
    async fn run_job(
        self: &Arc<Self>,
        job: VerifiedJob,
        stop: watch::Receiver<Option<Stop>>,
        sink: Option<StreamSink>,
    ) -> JobResult {
        let job_id = job.job_id;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let exec = async {
            let mut ctx = JobCtx::new(self, job_id, job.spec.timeout_s, stop, events_tx);
            let outcome = types::execute(&mut ctx, &job.spec.payload).await;
            (outcome, ctx.started_at_ms())
        };
        let ((outcome, started), sink) =
            tokio::join!(exec, forward_events(job_id, sink, events_rx));
        let finished = now_ms();
        let result = outcome.into_result(job_id, started.unwrap_or(finished), finished);
        lock(&self.running).remove(&job_id);
        self.deliver(result.clone(), sink).await;
        result
    }

    /// Puts the result in the outbox, then sends it on the job's stream, or on the current
    /// connection if that stream is gone. Unsent, it waits in the outbox for the next `Welcome`.
    async fn deliver(&self, result: JobResult, sink: Option<StreamSink>) {
        let job_id = job_uuid(&result.job_id);
        if let Err(err) = self.ledger.finish(&result) {
            warn!(%job_id, %err, "cannot persist the result; sending it anyway");
        }
        info!(
            %job_id,
            end = result.end.as_str(),
            exit_code = ?result.exit_code,
            error = result.error.as_deref().unwrap_or(""),
            stdout_bytes = result.stdout.len(),
            stderr_bytes = result.stderr.len(),
            "job finished"
        );
        if let Some(mut sink) = sink {
            let sent = sink.send(Message::JobResult(result.clone())).await;
            sink.finish();
            if sent {
                return;
            }
        }
        match self.current_link() {
            Some(link) => match link.send_uni(Message::JobResult(result)).await {
                Ok(()) => info!(%job_id, "result sent on a new stream"),
                Err(err) => warn!(%job_id, %err, "result not sent; it waits in the outbox"),
            },
            None => info!(%job_id, "offline; the result waits in the outbox"),
        }
    }

    /// At start: every job still accepted or running was interrupted by the agent's end. Its
    /// process group is killed if it is still there, and a failed result goes to the outbox.
    fn recover(&self, now_ms: u64) -> Result<usize, AgentError> {
        let interrupted = self.ledger.unfinished()?;
        for (job_id, entry) in &interrupted {
            let same_boot = !entry.boot_id.is_empty() && entry.boot_id == self.boot_id;
            let power_job = matches!(entry.job_type.as_str(), "reboot" | "shutdown");
            let (started_at_ms, outcome) = match &entry.state {
                JobState::Running { started_at_ms, .. } if power_job && !same_boot => (
                    *started_at_ms,
                    Outcome::succeeded(Some(r#"{"system_restarted":true}"#.into())),
                ),
                JobState::Running {
                    started_at_ms,
                    process,
                } => {
                    if let Some(process) = process
                        && same_boot
                        && kill_leftover(process)
                    {
                        warn!(job_id = %job_uuid(job_id), pgid = process.pgid, "killed the process group of an interrupted job");
                    }
                    (*started_at_ms, Outcome::failed(RESTARTED_WHILE_RUNNING))
                }
                _ => (
                    entry.accepted_at_ms,
                    Outcome::failed(RESTARTED_BEFORE_START),
                ),
            };
            let result = outcome.into_result(*job_id, started_at_ms, now_ms);
            warn!(
                job_id = %job_uuid(job_id),
                job_type = %entry.job_type,
                end = result.end.as_str(),
                "job interrupted by an agent restart"
            );
            self.ledger.finish(&result)?;
        }
        Ok(interrupted.len())
    }
}

/// Kills the recorded group if it is still the job's: the leader with the same start time, or
/// (leader gone) members left in the group.
fn kill_leftover(process: &ProcessRecord) -> bool {
    match runner::proc_stat(process.pgid) {
        Some((_, start)) if process.start_ticks.is_some_and(|t| t != start) => false,
        Some(_) => runner::kill_group(process.pgid),
        None => runner::group_exists(process.pgid) && runner::kill_group(process.pgid),
    }
}

/// The job's own stream: every frame sealed right before it is written. After a failed write
/// the stream is considered gone.
struct StreamSink {
    send: SendStream,
    /// Kept open while the job runs: the server sends nothing more on it, but dropping it
    /// would tell the server to stop sending.
    _recv: RecvStream,
    link: Link,
    alive: bool,
}

impl StreamSink {
    fn new(send: SendStream, recv: RecvStream, link: Link) -> Self {
        Self {
            send,
            _recv: recv,
            link,
            alive: true,
        }
    }

    /// Writes one message; `false` if the stream is gone.
    async fn send(&mut self, message: Message) -> bool {
        if !self.alive {
            return false;
        }
        if let Err(err) = write_frame(&mut self.send, &self.link.seal(message)).await {
            debug!(%err, "job stream gone");
            self.alive = false;
        }
        self.alive
    }

    async fn ack(&mut self, job_id: [u8; 16], outcome: JobAckOutcome) -> bool {
        self.send(Message::JobAck(JobAck { job_id, outcome })).await
    }

    fn finish(&mut self) {
        if self.alive {
            let _ = self.send.finish();
        }
    }
}

/// Writes a job's `JobStarted` and `JobOutput` to its stream while the stream lasts; returns
/// the stream (if still alive) when the job's events end.
async fn forward_events(
    job_id: [u8; 16],
    mut sink: Option<StreamSink>,
    mut events: mpsc::UnboundedReceiver<JobEvent>,
) -> Option<StreamSink> {
    let mut output_frames = 0;
    while let Some(event) = events.recv().await {
        let Some(stream) = sink.as_mut() else {
            continue;
        };
        let message = match event {
            JobEvent::Started { started_at_ms } => Message::JobStarted {
                job_id,
                started_at_ms,
            },
            JobEvent::Output { .. } if output_frames >= MAX_LIVE_OUTPUT_FRAMES => continue,
            JobEvent::Output {
                stream,
                offset,
                data,
            } => {
                output_frames += 1;
                if output_frames == MAX_LIVE_OUTPUT_FRAMES {
                    info!(job_id = %job_uuid(&job_id), "live output limit reached; the rest is only in the result");
                }
                Message::JobOutput(JobOutput {
                    job_id,
                    stream,
                    offset,
                    data,
                })
            }
        };
        if !stream.send(message).await {
            info!(job_id = %job_uuid(&job_id), "job stream gone; the job goes on and its result will be sent later");
            sink = None;
        }
    }
    sink
}

#[cfg(test)]
mod tests;
