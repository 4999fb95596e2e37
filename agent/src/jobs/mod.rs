//! The agent side of the job engine (docs/JOBS.md): running jobs and carrying their results
//! to the server. The rules (grant verification, the ledger, the outbox, replay) are the
//! protocol core's ([`crate::protocol::AgentCore`]); this module drives it over redb and QUIC.
//!
//! A job outlives the connection it was dispatched on: jobs run in tasks owned by the
//! [`JobEngine`] (created by `run`), not by the connection. Its live output goes to the stream
//! it came on while that stream lasts; its result is put in the outbox first, then sent on that
//! stream, or on a uni stream of the current connection if the stream is gone, or after the next
//! `Welcome` if the agent is offline.

mod caps;
mod ctx;
mod ledger;
mod mask;
mod runner;
mod types;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{RecvStream, SendStream, VarInt};
use reap3r_wire::{
    AgentConfig, CloseCode, JobAckOutcome, JobOutput, JobResult, Message, SealingSecret,
    VerifiedJob, VerifyingKey, Welcome,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::AgentError;
use crate::link::{Core, Link, lock, now_ms};
use crate::protocol::{AgentCore, Effect, FrameError, Lane, Session};
use crate::transport::write_frame;
use caps::Capabilities;
use ctx::{JobCtx, Outcome};
pub(crate) use ledger::LedgerStore;
use ledger::{JobState, Ledger, ProcessRecord};
use runner::{JobEvent, Stop};

/// QUIC stream error code for a job stream whose dispatch envelope was not accepted.
const DISPATCH_REFUSED_CODE: u32 = CloseCode::ProtocolError as u32;
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
    /// Opens the secrets sealed to this agent (kept in the identity store).
    pub sealing: SealingSecret,
    /// Run as `<cmd> -r|-h <when>` by reboot and shutdown jobs.
    pub power_command: String,
}

/// State shared by the engine and its job tasks.
pub(crate) struct Shared {
    pub ledger: Arc<Ledger>,
    pub caps: Capabilities,
    pub agent_id: [u8; 16],
    /// Opens the secrets sealed to this agent; never logged (its `Debug` shows the public key).
    pub sealing: SealingSecret,
    pub data_dir: PathBuf,
    pub power_command: String,
    pub config_tx: mpsc::UnboundedSender<ConfigRequest>,
    /// The protocol core: the live session and the ledger rules, over `ledger`.
    core: Arc<Mutex<Core>>,
    boot_id: String,
    /// Stop switches of the jobs accepted and not yet finished.
    running: Mutex<HashMap<[u8; 16], watch::Sender<Option<Stop>>>>,
    /// The current connection, between `Welcome` and its end.
    link: Mutex<Option<Link>>,
    replay: Mutex<Option<AbortHandle>>,
    tasks: Mutex<JoinSet<()>>,
    /// Numbers the job streams for the core.
    streams: AtomicU64,
}

fn job_uuid(id: &[u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id)
}

/// The core's effects for a dispatch, with the accepted job (if any) taken out to be run, and
/// its stop switch.
type Admitted = (
    Vec<Effect>,
    Option<(VerifiedJob, watch::Receiver<Option<Stop>>)>,
);

/// The agent's job engine; one per `run`.
pub(crate) struct JobEngine {
    shared: Arc<Shared>,
}

impl JobEngine {
    /// Opens the ledger, finds what this agent can run, and turns jobs interrupted by a restart
    /// into failed results in the outbox.
    pub(crate) fn open(
        opts: EngineOptions,
        config_tx: mpsc::UnboundedSender<ConfigRequest>,
    ) -> Result<Self, AgentError> {
        let ledger = Arc::new(Ledger::open(&opts.data_dir)?);
        let caps = Capabilities::detect();
        info!(capabilities = ?caps.advertised(), "job capabilities");
        let boot_id = runner::boot_id();
        let store = LedgerStore {
            ledger: ledger.clone(),
            boot_id: boot_id.clone(),
        };
        let shared = Arc::new(Shared {
            ledger,
            caps,
            agent_id: opts.agent_id,
            sealing: opts.sealing,
            data_dir: opts.data_dir,
            power_command: opts.power_command,
            config_tx,
            core: Arc::new(Mutex::new(AgentCore::new(
                opts.agent_id,
                opts.server_key,
                store,
            ))),
            boot_id,
            running: Mutex::new(HashMap::new()),
            link: Mutex::new(None),
            replay: Mutex::new(None),
            tasks: Mutex::new(JoinSet::new()),
            streams: AtomicU64::new(0),
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

    /// A connection was welcomed: it is the live one from now on, and everything in the
    /// outbox is sent again, each on its own uni stream. Returns the connection's link and the
    /// config the welcome carries.
    pub(crate) fn link_up(
        &self,
        conn: quinn::Connection,
        session: Session,
        welcome: &Welcome,
    ) -> (Link, AgentConfig) {
        let welcomed = lock(&self.shared.core).welcomed(session, welcome);
        let link = Link::new(conn, welcomed.conn, self.shared.core.clone());
        *lock(&self.shared.link) = Some(link.clone());
        if let Some(err) = &welcomed.store_failed {
            warn!(%err, "job ledger");
        }
        let replay = welcomed.replay;
        if !replay.is_empty() {
            info!(count = replay.len(), "replaying results from the outbox");
            let sender = link.clone();
            let task = tokio::spawn(async move {
                for result in replay {
                    let job_id = job_uuid(&result.job_id);
                    let end = result.end.as_str();
                    match sender.send_uni(Message::JobResult(result)).await {
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
        (link, welcomed.config)
    }

    /// The connection ended: results wait in the outbox until the next `Welcome`.
    pub(crate) fn link_down(&self) {
        if let Some(link) = lock(&self.shared.link).take() {
            lock(&self.shared.core).disconnected(link.id());
        }
        if let Some(task) = lock(&self.shared.replay).take() {
            task.abort();
        }
    }

    /// Handles the first frame of a job stream the server opened: the core verifies it and
    /// applies the ledger rules; the answers go back on the stream, and an accepted job runs.
    pub(crate) fn dispatch(
        &self,
        frame: Vec<u8>,
        mut send: SendStream,
        recv: RecvStream,
        link: Link,
    ) {
        let shared = self.shared.clone();
        shared.clone().spawn(async move {
            let stream = shared.streams.fetch_add(1, Ordering::Relaxed);
            let admitted =
                shared.admit(|core| core.on_frame(link.id(), Lane::Job(stream), frame, now_ms()));
            let (effects, start) = match admitted {
                Ok(admitted) => admitted,
                Err(err) => {
                    warn!(%err, "job stream envelope refused; dropped");
                    let _ = send.reset(VarInt::from_u32(DISPATCH_REFUSED_CODE));
                    return;
                }
            };
            let mut sink = StreamSink::new(send, recv, link, stream);
            for effect in effects {
                match effect {
                    Effect::Send { message, .. } => {
                        log_answer(&message);
                        let _ = sink.send(message).await;
                    }
                    Effect::FinishStream { .. } => sink.finish(),
                    Effect::ResetStream { reason, .. } => {
                        warn!(%reason, "job stream did not start with a dispatch; dropped");
                        sink.reset();
                    }
                    other => log_effect(&other),
                }
            }
            if let Some((job, stop)) = start {
                shared.run_job(job, stop, Some(sink)).await;
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

    /// Stops every running job (each ends `Failed`, "agent stopped") and waits a little for
    /// their results to reach the outbox (and the server, if a connection is still up). New
    /// dispatches are refused from now on.
    pub(crate) async fn shutdown(&self) {
        lock(&self.shared.core).stop_accepting();
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

    /// Runs the core's dispatch rules (`rules`) and takes an accepted job's start out of the
    /// effects, its stop switch registered under the same lock as the ledger write, so a cancel
    /// can never find the job recorded but not cancellable.
    fn admit(
        &self,
        rules: impl FnOnce(&mut Core) -> Result<Vec<Effect>, FrameError>,
    ) -> Result<Admitted, FrameError> {
        let mut running = lock(&self.running);
        let mut effects = rules(&mut lock(&self.core))?;
        let mut start = None;
        effects.retain(|effect| match effect {
            Effect::StartJob { job, .. } => {
                let (tx, stop) = watch::channel(None);
                running.insert(job.job_id, tx);
                start = Some((job.clone(), stop));
                false
            }
            _ => true,
        });
        Ok((effects, start))
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
        info!(
            job_id = %job_uuid(&job_id),
            job_type = job.spec.payload.type_name(),
            timeout_s = job.spec.timeout_s,
            "job accepted"
        );
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let exec = async {
            let mut ctx = JobCtx::new(self, job_id, job.spec.timeout_s, stop, events_tx);
            let outcome = types::execute(&mut ctx, &job.spec.payload, job.sealed.as_ref()).await;
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

    /// Hands the result to the core, which puts it in the outbox and says where to send it: on
    /// the job's stream, or on the current connection if that stream is gone. Unsent, it waits
    /// in the outbox for the next `Welcome`.
    async fn deliver(&self, result: JobResult, mut sink: Option<StreamSink>) {
        let job_id = job_uuid(&result.job_id);
        let stream = sink
            .as_ref()
            .filter(|s| s.alive)
            .map(|s| (s.link.id(), s.stream));
        let effects = lock(&self.core).job_finished(result.clone(), stream);
        info!(
            %job_id,
            end = result.end.as_str(),
            exit_code = ?result.exit_code,
            error = result.error.as_deref().unwrap_or(""),
            stdout_bytes = result.stdout.len(),
            stderr_bytes = result.stderr.len(),
            "job finished"
        );
        // Where the result goes if not on its own stream: a uni stream of this connection.
        let mut uni = None;
        for effect in effects {
            match effect {
                Effect::Send {
                    lane: Lane::Job(_),
                    message,
                    ..
                } => {
                    if let Some(s) = sink.as_mut()
                        && s.send(message).await
                    {
                        s.finish();
                        return;
                    }
                    uni = lock(&self.core).reroute(result.clone()).into_iter().next();
                }
                Effect::Send { .. } => uni = Some(effect),
                Effect::FinishStream { .. } => {}
                other => log_effect(&other),
            }
        }
        if let Some(s) = sink.as_mut() {
            s.finish();
        }
        let Some(Effect::Send { conn, message, .. }) = uni else {
            info!(%job_id, "offline; the result waits in the outbox");
            return;
        };
        match self.current_link().filter(|l| l.id() == conn) {
            Some(link) => match link.send_uni(message).await {
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
    stream: crate::protocol::StreamId,
    alive: bool,
}

impl StreamSink {
    fn new(
        send: SendStream,
        recv: RecvStream,
        link: Link,
        stream: crate::protocol::StreamId,
    ) -> Self {
        Self {
            send,
            _recv: recv,
            link,
            stream,
            alive: true,
        }
    }

    /// Writes one message; `false` if the stream is gone.
    async fn send(&mut self, message: Message) -> bool {
        if !self.alive {
            return false;
        }
        let Some(frame) = self.link.seal(message) else {
            debug!("job stream's session ended");
            self.alive = false;
            return false;
        };
        if let Err(err) = write_frame(&mut self.send, &frame).await {
            debug!(%err, "job stream gone");
            self.alive = false;
        }
        self.alive
    }

    /// Ends the stream cleanly (once).
    fn finish(&mut self) {
        if self.alive {
            let _ = self.send.finish();
            self.alive = false;
        }
    }

    fn reset(&mut self) {
        let _ = self.send.reset(VarInt::from_u32(DISPATCH_REFUSED_CODE));
        self.alive = false;
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

/// Logs what the core said about a dispatch, as it goes back on the job stream.
fn log_answer(message: &Message) {
    match message {
        Message::JobAck(ack) => match &ack.outcome {
            JobAckOutcome::Refused(reason) => {
                warn!(job_id = %job_uuid(&ack.job_id), %reason, "job refused")
            }
            JobAckOutcome::Duplicate => info!(
                job_id = %job_uuid(&ack.job_id),
                "duplicate dispatch; not running it again"
            ),
            JobAckOutcome::Accepted => {}
        },
        Message::JobResult(r) => {
            info!(job_id = %job_uuid(&r.job_id), "result still in the outbox; sent again")
        }
        _ => {}
    }
}

/// Logs an effect the job engine has nothing else to do with.
pub(crate) fn log_effect(effect: &Effect) {
    match effect {
        Effect::StoreFailed(err) => warn!(%err, "job ledger"),
        other => debug!(effect = ?other, "ignored"),
    }
}

#[cfg(test)]
mod tests;
