//! One simulated agent: its protocol core (the agent's own [`AgentCore`], over an in-memory
//! ledger and outbox), the live connection, what it saw of each job, and the pre-signed load of
//! the steady scenario. Jobs are answered without spawning a process: a `run_script` for `sh`
//! "succeeds" at once with no output; anything else ends `refused`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Result, bail};
use quinn::{Connection, VarInt};
use reap3r_agent::protocol::{AgentCore, ConnId, Effect, Lane as WireLane, MemoryStore, Session};
use reap3r_wire::{
    AgentConfig, Capped, CloseCode, Heartbeat, InterfaceCounters, InventorySummary, JobAckOutcome,
    JobEnd, JobPayload, JobResult, Message, MetricsSample, MountUsage, Name, SigningKey,
    VerifiedJob, VerifyingKey, Welcome,
};

use super::now_ms;
use crate::transport::close_kind;

pub(super) fn inventory(idx: usize) -> InventorySummary {
    InventorySummary {
        os_name: "linux".into(),
        os_version: "13".into(),
        kernel_version: "6.1.0-sim".into(),
        arch: "x86_64".into(),
        cpu_model: "simulated".into(),
        cpu_cores: 2,
        memory_total_bytes: 4 << 30,
        disk_total_bytes: 64 << 30,
        boot_time_s: 1_700_000_000 + idx as u64,
        // Simulated agents have no interfaces to wake.
        interfaces: Default::default(),
    }
}

/// Which lane a pre-signed message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Datagram,
    Uni,
}

/// What one simulated agent saw of one job.
#[derive(Debug, Clone, Default)]
pub struct JobTrack {
    /// Dispatches received (including repeats after a reconnect).
    pub dispatches: u32,
    /// Times the job was accepted and "run": must be exactly 1.
    pub executions: u32,
    pub duplicates: u32,
    pub refusals: u32,
    pub refusal: Option<String>,
    /// `JobResult` frames sent: live, duplicate answers and replays after reconnects.
    pub results_sent: u32,
    pub results_replayed: u32,
    /// Sent again on a live connection for want of an ack (`AgentCore::resend_due`).
    pub results_resent: u32,
    pub acks: u32,
    pub first_dispatch_us: Option<u64>,
    pub first_ack_us: Option<u64>,
}

struct Live {
    conn: Connection,
    id: ConnId,
}

struct AgentState {
    core: AgentCore<MemoryStore>,
    live: Option<Live>,
    jobs: HashMap<[u8; 16], JobTrack>,
    /// Pre-signed messages for the current session (steady-state load), in sequence order.
    presigned: VecDeque<(Lane, Vec<u8>)>,
    /// Own heartbeat/metrics timers suspended (the steady pacer sends instead).
    quiet: bool,
    uptime_s: u64,
}

impl AgentState {
    /// The live connection's id in the core, if `conn` is it.
    fn live_id(&self, conn: &Connection) -> Option<ConnId> {
        self.live
            .as_ref()
            .filter(|l| l.conn.stable_id() == conn.stable_id())
            .map(|l| l.id)
    }
}

pub struct SimAgent {
    pub idx: usize,
    pub id: [u8; 16],
    pub(super) key: SigningKey,
    state: Mutex<AgentState>,
    pub welcomes: AtomicU64,
    /// Time of the last `Welcome`, µs since the fleet's epoch (0 = never).
    pub welcome_us: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub metrics_sent: AtomicU64,
    /// Its metrics report [`HOT_CPU_CENTIPERCENT`] (the alerting scenario's threshold crossing).
    hot: AtomicBool,
    /// `taken_at` of the first hot sample it sent, ms since the Unix epoch (0 = none yet).
    first_hot_ms: AtomicU64,
}

/// CPU a hot agent reports: 99 %.
pub const HOT_CPU_CENTIPERCENT: u16 = 9_900;

impl std::fmt::Debug for SimAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAgent")
            .field("idx", &self.idx)
            .finish_non_exhaustive()
    }
}

/// What the pacer got from an agent's pre-signed queue.
pub enum Outgoing {
    Nothing,
    Datagram,
    DatagramFailed,
    Uni(Connection, Vec<u8>),
}

/// The process-free job runner: what a no-op job ends with.
fn run_noop(job: &VerifiedJob, now: u64) -> JobResult {
    let (end, error) = match &job.spec.payload {
        JobPayload::RunScript(s) if s.interpreter == "sh" => (JobEnd::Succeeded, None),
        other => (
            JobEnd::Refused,
            Some(format!("unsupported job {}", other.type_name())),
        ),
    };
    JobResult {
        job_id: job.job_id,
        end,
        exit_code: (end == JobEnd::Succeeded).then_some(0),
        stdout: Vec::new(),
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        data: None,
        error,
        started_at_ms: now,
        finished_at_ms: now,
    }
}

/// The sample simulated agent `idx` takes at `taken_at_ms`: one mount, one interface, values
/// that move with time (CPU within 0–5 %, counters growing) as a quiet machine's do; `hot`
/// reports [`HOT_CPU_CENTIPERCENT`] instead.
pub fn sample(idx: usize, hot: bool, taken_at_ms: u64) -> MetricsSample {
    let tick = taken_at_ms / 10_000;
    MetricsSample {
        taken_at_ms,
        cpu_centipercent: if hot {
            HOT_CPU_CENTIPERCENT
        } else {
            ((idx as u64 * 7 + tick) % 500) as u16
        },
        load1_centi: 12 + (tick % 5) as u32,
        load5_centi: 10,
        load15_centi: 8,
        memory_used_bytes: (900 << 20) + (tick % 64) * 4096,
        memory_total_bytes: 4 << 30,
        swap_used_bytes: 0,
        swap_total_bytes: 1 << 30,
        mounts: Capped::truncated(vec![MountUsage {
            mount: Name::truncated("/"),
            used_bytes: (20 << 30) + (tick % 1024) * 4096,
            total_bytes: 64 << 30,
        }]),
        interfaces: Capped::truncated(vec![InterfaceCounters {
            name: Name::truncated("eth0"),
            rx_bytes: tick * 1500,
            tx_bytes: tick * 700,
            rx_errors: 0,
            tx_errors: 0,
        }]),
        process_count: 200 + (tick % 10) as u32,
        uptime_s: 3600 + tick * 10,
    }
}

impl SimAgent {
    pub(super) fn new(idx: usize, id: [u8; 16], key: SigningKey, server_key: VerifyingKey) -> Self {
        Self {
            idx,
            id,
            key,
            state: Mutex::new(AgentState {
                core: AgentCore::new(id, server_key, MemoryStore::new()),
                live: None,
                jobs: HashMap::new(),
                presigned: VecDeque::new(),
                quiet: false,
                uptime_s: 0,
            }),
            welcomes: AtomicU64::new(0),
            welcome_us: AtomicU64::new(0),
            heartbeats_sent: AtomicU64::new(0),
            metrics_sent: AtomicU64::new(0),
            hot: AtomicBool::new(false),
            first_hot_ms: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, AgentState> {
        // A poisoned lock only means another task panicked mid-update; counters stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn heartbeat(uptime_s: u64, idx: usize) -> Message {
        Message::Heartbeat(Heartbeat {
            uptime_s,
            cpu_centipercent: (idx % 500) as u16,
            memory_used_bytes: 900 << 20,
        })
    }

    fn metrics(idx: usize, hot: bool, taken_at_ms: u64) -> Message {
        Message::Metrics(sample(idx, hot, taken_at_ms))
    }

    /// A heartbeat on the current session's datagram lane (unless the pacer owns the load).
    pub(super) fn send_heartbeat(&self, conn: &Connection) -> Result<(), String> {
        let mut st = self.state();
        if st.quiet {
            return Ok(());
        }
        st.uptime_s += 1;
        let uptime = st.uptime_s;
        let Some(id) = st.live_id(conn) else {
            return Ok(());
        };
        let Some(sealed) = st
            .core
            .seal_datagram(id, Self::heartbeat(uptime, self.idx), now_ms())
        else {
            return Ok(());
        };
        let bytes = sealed.map_err(|e| e.to_string())?;
        match conn.send_datagram(bytes.into()) {
            Ok(()) => {
                self.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(quinn::SendDatagramError::ConnectionLost(e)) => Err(close_kind(&e)),
            Err(e) => Err(format!("datagram: {e}")),
        }
    }

    pub(super) fn seal_metrics(&self, conn: &Connection) -> Option<Vec<u8>> {
        let mut st = self.state();
        if st.quiet {
            return None;
        }
        let id = st.live_id(conn)?;
        let now = now_ms();
        let hot = self.hot.load(Ordering::Relaxed);
        let frame = st.core.seal(id, Self::metrics(self.idx, hot, now), now)?;
        self.metrics_sent.fetch_add(1, Ordering::Relaxed);
        if hot {
            let _ =
                self.first_hot_ms
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        Some(frame)
    }

    /// From its next sample on, the agent reports a CPU of [`HOT_CPU_CENTIPERCENT`] (or its
    /// usual value again).
    pub fn set_hot(&self, hot: bool) {
        self.hot.store(hot, Ordering::Relaxed);
    }

    /// When it sent its first hot sample (`taken_at`, ms since the Unix epoch).
    pub fn first_hot_ms(&self) -> Option<u64> {
        Some(self.first_hot_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Suspends or resumes the agent's own heartbeat and metrics timers.
    pub fn set_quiet(&self, quiet: bool) {
        self.state().quiet = quiet;
    }

    /// Signs `lanes.len()` messages for the current session now, to be sent later by the pacer
    /// (so the simulator's signing cost stays out of the measured window). Returns how many.
    pub fn presign(&self, lanes: &[Lane]) -> usize {
        let mut st = self.state();
        let AgentState {
            core,
            live,
            presigned,
            uptime_s,
            ..
        } = &mut *st;
        let Some(id) = live.as_ref().map(|l| l.id) else {
            return 0;
        };
        let now = now_ms();
        for lane in lanes {
            *uptime_s += 1;
            let msg = match lane {
                Lane::Datagram => Self::heartbeat(*uptime_s, self.idx),
                Lane::Uni => Self::metrics(self.idx, false, now),
            };
            let Some(frame) = core.seal(id, msg, now) else {
                return 0;
            };
            presigned.push_back((*lane, frame));
        }
        lanes.len()
    }

    /// Sends the next pre-signed message (datagrams directly; uni streams are returned for the
    /// caller to open, since that awaits).
    pub fn send_presigned(&self) -> Outgoing {
        let mut st = self.state();
        let AgentState {
            live, presigned, ..
        } = &mut *st;
        let (Some(live), Some((lane, bytes))) = (live.as_ref(), presigned.pop_front()) else {
            return Outgoing::Nothing;
        };
        match lane {
            Lane::Datagram => match live.conn.send_datagram(bytes.into()) {
                Ok(()) => {
                    self.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                    Outgoing::Datagram
                }
                Err(_) => Outgoing::DatagramFailed,
            },
            Lane::Uni => {
                self.metrics_sent.fetch_add(1, Ordering::Relaxed);
                Outgoing::Uni(live.conn.clone(), bytes)
            }
        }
    }

    pub fn presigned_left(&self) -> usize {
        self.state().presigned.len()
    }

    pub fn job(&self, job_id: &[u8; 16]) -> JobTrack {
        self.state().jobs.get(job_id).cloned().unwrap_or_default()
    }

    pub fn outbox_len(&self) -> usize {
        self.state().core.store().outbox_len()
    }

    /// Cuts the agent's connection from its side, as a network change would (the agent then
    /// reconnects with its usual backoff). Returns whether it was connected.
    pub fn cut_link(&self) -> bool {
        let st = self.state();
        match &st.live {
            Some(live) => {
                live.conn.close(
                    VarInt::from_u32(CloseCode::Normal as u32),
                    b"bench: link cut",
                );
                true
            }
            None => false,
        }
    }

    /// A welcomed connection becomes the live one. Returns the config to follow and the
    /// unacknowledged results, sealed for it (one uni stream each).
    pub(super) fn install(
        &self,
        conn: Connection,
        session: Session,
        welcome: &Welcome,
    ) -> (AgentConfig, Vec<Vec<u8>>) {
        let now = now_ms();
        let mut st = self.state();
        st.presigned.clear();
        let welcomed = st.core.welcomed(session, welcome);
        let id = welcomed.conn;
        st.live = Some(Live { conn, id });
        let mut replay = Vec::new();
        for result in welcomed.replay {
            let t = st.jobs.entry(result.job_id).or_default();
            t.results_sent += 1;
            t.results_replayed += 1;
            replay.extend(st.core.seal(id, Message::JobResult(result), now));
        }
        (welcomed.config, replay)
    }

    /// Results still unacknowledged long after they went out on `conn` (see
    /// `AgentCore::resend_due`), sealed for it, one uni stream each.
    pub(super) fn resend_due(&self, conn: &Connection) -> Vec<Vec<u8>> {
        let now = now_ms();
        let mut st = self.state();
        let Some(id) = st.live_id(conn) else {
            return Vec::new();
        };
        let mut frames = Vec::new();
        for effect in st.core.resend_due(now) {
            let Effect::Send { message, .. } = effect else {
                continue;
            };
            if let Message::JobResult(r) = &message {
                let t = st.jobs.entry(r.job_id).or_default();
                t.results_sent += 1;
                t.results_resent += 1;
            }
            frames.extend(st.core.seal(id, message, now));
        }
        frames
    }

    pub(super) fn uninstall(&self, conn: &Connection) {
        let mut st = self.state();
        if let Some(id) = st.live_id(conn) {
            st.core.disconnected(id);
            st.live = None;
            st.presigned.clear();
        }
    }

    /// A server envelope on the control stream.
    pub(super) fn on_control_frame(
        &self,
        frame: Vec<u8>,
        conn: &Connection,
        now_us: u64,
    ) -> Result<()> {
        let mut st = self.state();
        let Some(id) = st.live_id(conn) else {
            return Ok(());
        };
        let effects = st.core.on_frame(id, WireLane::Control, frame, now_ms())?;
        for effect in effects {
            // JobCancel: nothing runs, so nothing to kill. ConfigUpdate, Ack: nothing to do.
            if let Effect::Acked { job_id, .. } = effect {
                let t = st.jobs.entry(job_id).or_default();
                t.acks += 1;
                t.first_ack_us.get_or_insert(now_us);
            }
        }
        Ok(())
    }

    /// The first frame of a job stream, through the core's rules; an accepted job is "run" at
    /// once. Returns the frames to write back on the stream, sealed.
    pub(super) fn on_dispatch(
        &self,
        frame: Vec<u8>,
        conn: &Connection,
        now_us: u64,
    ) -> Result<Vec<Vec<u8>>> {
        let now = now_ms();
        let mut st = self.state();
        let Some(id) = st.live_id(conn) else {
            bail!("dispatch on a stale connection");
        };
        let mut effects: VecDeque<Effect> =
            st.core.on_frame(id, WireLane::Job(0), frame, now)?.into();
        let mut out = Vec::new();
        while let Some(effect) = effects.pop_front() {
            let AgentState { core, jobs, .. } = &mut *st;
            match effect {
                Effect::Send { conn, message, .. } => {
                    match &message {
                        Message::JobAck(ack) => {
                            let t = jobs.entry(ack.job_id).or_default();
                            t.dispatches += 1;
                            match &ack.outcome {
                                JobAckOutcome::Refused(reason) => {
                                    t.refusals += 1;
                                    t.refusal = Some(reason.clone());
                                }
                                JobAckOutcome::Duplicate => {
                                    t.duplicates += 1;
                                    t.first_dispatch_us.get_or_insert(now_us);
                                }
                                JobAckOutcome::Accepted => {
                                    t.first_dispatch_us.get_or_insert(now_us);
                                }
                            }
                        }
                        Message::JobResult(r) => {
                            jobs.entry(r.job_id).or_default().results_sent += 1
                        }
                        _ => {}
                    }
                    out.extend(core.seal(conn, message, now));
                }
                Effect::StartJob { conn, stream, job } => {
                    let t = jobs.entry(job.job_id).or_default();
                    t.executions += 1;
                    let result = run_noop(&job, now);
                    if let Some(error) = &result.error {
                        t.refusals += 1;
                        t.refusal = Some(error.clone());
                    }
                    let started = Message::JobStarted {
                        job_id: job.job_id,
                        started_at_ms: now,
                    };
                    out.extend(core.seal(conn, started, now));
                    let finished = core.job_finished(result, Some((conn, stream)));
                    for (i, e) in finished.into_iter().enumerate() {
                        effects.insert(i, e);
                    }
                }
                Effect::ResetStream { reason, .. } => bail!("{reason}"),
                _ => {}
            }
        }
        Ok(out)
    }
}
