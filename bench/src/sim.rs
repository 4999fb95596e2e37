//! Simulated agents: real Ed25519 identities enrolled with a real token, speaking the real
//! protocol (signed envelopes, session nonce, replay windows) over real QUIC connections, many
//! multiplexed over a few client endpoints. Each agent behaves like `reap3r-agent run`: hello,
//! heartbeats as datagrams, metrics on uni streams, reconnection with jittered backoff; and for
//! jobs like the agent in docs/JOBS.md: it verifies each dispatch and its grant, answers on the
//! job's stream (ack, started, result) without running a process, keeps the result in an
//! in-memory outbox until `JobResultAck`, and resends unacknowledged results after a reconnect.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use reap3r_wire::{
    AgentConfig, CloseCode, EnrollRequest, Envelope, Heartbeat, Hello, InboundSession,
    InventorySummary, JobAck, JobAckOutcome, JobEnd, JobPayload, JobResult, Message, MetricsSample,
    OutboundSession, SERVER_NAME, SERVER_SENDER, SigningKey,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use reap3r_agent::Backoff;

use crate::stats::Rng;
use crate::transport::{
    Pins, REFUSED, client_config, client_endpoint, close_kind, read_frame, send_on_uni, write_frame,
};

/// What a simulated agent announces at hello: the real agent's capabilities plus what it needs
/// to receive `run_script` jobs for `sh`.
pub const CAPABILITIES: &[&str] = &[
    "heartbeat",
    "metrics",
    "inventory",
    "config_update",
    "job:run_script",
    "interpreter:sh",
];
pub const AGENT_VERSION: &str = concat!("bench-", env!("CARGO_PKG_VERSION"));
/// Clock skew allowed when checking a grant's expiry (docs/JOBS.md: 5 min).
const GRANT_SKEW_MS: u64 = 5 * 60 * 1000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An enrolled agent's identity: the id the server assigned and its private key.
#[derive(Clone)]
pub struct Identity {
    pub id: [u8; 16],
    pub key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &uuid::Uuid::from_bytes(self.id))
            .finish_non_exhaustive()
    }
}

fn new_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn inventory(idx: usize) -> InventorySummary {
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
    }
}

/// Client endpoints: agent `i` uses endpoint `i / per` and dials that endpoint's target (the
/// server, or the impairment relay in front of it).
pub struct Endpoints {
    pub endpoints: Vec<Endpoint>,
    pub targets: Vec<SocketAddr>,
    pub per: usize,
}

impl Endpoints {
    pub fn count(agents: usize, per: usize) -> usize {
        agents.div_ceil(per.max(1)).max(1)
    }

    pub fn new(targets: Vec<SocketAddr>, per: usize) -> Result<Self> {
        let endpoints = targets
            .iter()
            .map(|_| client_endpoint())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            targets,
            per: per.max(1),
        })
    }

    fn for_agent(&self, idx: usize) -> (&Endpoint, SocketAddr) {
        let e = (idx / self.per).min(self.endpoints.len() - 1);
        (&self.endpoints[e], self.targets[e])
    }

    pub async fn close(&self) {
        for e in &self.endpoints {
            e.close(VarInt::from_u32(CloseCode::Normal as u32), b"bench done");
        }
        for e in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await;
        }
    }
}

/// Enrols `n` agents with `token`, `concurrency` at a time, straight to the server.
pub async fn enroll_all(
    server: SocketAddr,
    pins: &Pins,
    token: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Identity>> {
    let endpoints = Endpoints::new(vec![server; concurrency.div_ceil(64).clamp(1, 8)], 1)?;
    let config = client_config(pins.fingerprint, Duration::from_secs(30))?;
    let ids: Vec<Result<Identity>> = futures::stream::iter(0..n)
        .map(|i| {
            let (endpoint, target) = endpoints.for_agent(i % endpoints.endpoints.len());
            let endpoint = endpoint.clone();
            let config = config.clone();
            async move {
                let mut last = anyhow!("not tried");
                for attempt in 0..5u64 {
                    match enroll_one(&endpoint, target, &config, pins, token, i).await {
                        Ok(id) => return Ok(id),
                        Err(err) => last = err,
                    }
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                }
                Err(last.context(format!("enrolling agent {i}")))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    endpoints.close().await;
    ids.into_iter().collect()
}

async fn enroll_one(
    endpoint: &Endpoint,
    target: SocketAddr,
    config: &quinn::ClientConfig,
    pins: &Pins,
    token: &str,
    idx: usize,
) -> Result<Identity> {
    let key = new_key()?;
    let conn = endpoint
        .connect_with(config.clone(), target, SERVER_NAME)?
        .await?;
    let result = async {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let frame = read_frame(&mut recv).await?;
        let (mut inbound, _) =
            InboundSession::from_challenge(Envelope::parse(frame)?, &pins.server_key)?;
        let mut outbound = OutboundSession::new([0; 16], inbound.nonce(), key.clone());
        let request = EnrollRequest {
            token: token.to_string(),
            public_key: key.verifying_key().to_bytes(),
            hostname: format!("sim-{idx:06}"),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: AGENT_VERSION.into(),
        };
        write_frame(
            &mut send,
            &outbound.seal(Message::Enroll(request), now_ms()),
        )
        .await?;
        let frame = read_frame(&mut recv).await?;
        match inbound
            .accept(Envelope::parse(frame)?, &SERVER_SENDER, &pins.server_key)?
            .into_message()
        {
            Message::EnrollResult(r) => Ok(Identity {
                id: r.agent_id,
                key: key.clone(),
            }),
            other => bail!("expected EnrollResult, got {:?}", other.kind()),
        }
    }
    .await;
    let result = result.map_err(|e: anyhow::Error| match conn.close_reason() {
        Some(reason) => anyhow!("{}: {e}", close_kind(&reason)),
        None => e,
    });
    conn.close(VarInt::from_u32(CloseCode::Normal as u32), b"enrolled");
    result
}

#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Connections per client endpoint (UDP socket).
    pub agents_per_endpoint: usize,
    /// First connections in flight at once (the harness's ramp); reconnects are not limited,
    /// like real agents, which only have their own jittered backoff.
    pub ramp: usize,
    pub handshake_timeout: Duration,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// QUIC idle timeout (the real agent uses heartbeat interval × 3 + 10 s).
    pub idle_timeout: Duration,
    /// Send metrics on uni streams at the interval the server gives (as the real agent does).
    pub metrics: bool,
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
    pub acks: u32,
    pub first_dispatch_us: Option<u64>,
    pub first_ack_us: Option<u64>,
}

struct Live {
    conn: Connection,
    inbound: InboundSession,
    outbound: OutboundSession,
}

#[derive(Default)]
struct AgentState {
    live: Option<Live>,
    jobs: HashMap<[u8; 16], JobTrack>,
    /// Results not yet acknowledged by the server.
    outbox: HashMap<[u8; 16], JobResult>,
    /// Pre-signed messages for the current session (steady-state load), in sequence order.
    presigned: VecDeque<(Lane, Vec<u8>)>,
    /// Own heartbeat/metrics timers suspended (the steady pacer sends instead).
    quiet: bool,
    uptime_s: u64,
}

pub struct SimAgent {
    pub idx: usize,
    pub id: [u8; 16],
    key: SigningKey,
    state: Mutex<AgentState>,
    pub welcomes: AtomicU64,
    /// Time of the last `Welcome`, µs since the fleet's epoch (0 = never).
    pub welcome_us: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub metrics_sent: AtomicU64,
}

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

impl SimAgent {
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

    fn metrics(idx: usize) -> Message {
        Message::Metrics(MetricsSample {
            taken_at_ms: now_ms(),
            cpu_centipercent: (idx % 500) as u16,
            memory_used_bytes: 900 << 20,
            memory_total_bytes: 4 << 30,
            disk_used_bytes: 20 << 30,
            disk_total_bytes: 64 << 30,
            net_rx_bytes: 1 << 20,
            net_tx_bytes: 1 << 19,
            load1_centi: 12,
        })
    }

    /// A heartbeat on the current session's datagram lane (unless the pacer owns the load).
    fn send_heartbeat(&self, conn: &Connection) -> Result<(), String> {
        let mut st = self.state();
        if st.quiet {
            return Ok(());
        }
        st.uptime_s += 1;
        let uptime = st.uptime_s;
        let Some(live) = st
            .live
            .as_mut()
            .filter(|l| l.conn.stable_id() == conn.stable_id())
        else {
            return Ok(());
        };
        let bytes = live
            .outbound
            .seal_datagram(Self::heartbeat(uptime, self.idx), now_ms())
            .map_err(|e| e.to_string())?;
        match live.conn.send_datagram(bytes.into()) {
            Ok(()) => {
                self.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(quinn::SendDatagramError::ConnectionLost(e)) => Err(close_kind(&e)),
            Err(e) => Err(format!("datagram: {e}")),
        }
    }

    fn seal_metrics(&self, conn: &Connection) -> Option<Vec<u8>> {
        let mut st = self.state();
        if st.quiet {
            return None;
        }
        let live = st
            .live
            .as_mut()
            .filter(|l| l.conn.stable_id() == conn.stable_id())?;
        self.metrics_sent.fetch_add(1, Ordering::Relaxed);
        Some(live.outbound.seal(Self::metrics(self.idx), now_ms()))
    }

    /// Suspends or resumes the agent's own heartbeat and metrics timers.
    pub fn set_quiet(&self, quiet: bool) {
        self.state().quiet = quiet;
    }

    /// Signs `lanes.len()` messages for the current session now, to be sent later by the pacer
    /// (so the simulator's signing cost stays out of the measured window). Returns how many.
    pub fn presign(&self, lanes: &[Lane]) -> usize {
        let mut st = self.state();
        let mut uptime = st.uptime_s;
        let AgentState {
            live, presigned, ..
        } = &mut *st;
        let Some(live) = live.as_mut() else {
            return 0;
        };
        let now = now_ms();
        for lane in lanes {
            uptime += 1;
            let msg = match lane {
                Lane::Datagram => Self::heartbeat(uptime, self.idx),
                Lane::Uni => Self::metrics(self.idx),
            };
            presigned.push_back((*lane, live.outbound.seal(msg, now)));
        }
        st.uptime_s = uptime;
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
        self.state().outbox.len()
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

    fn install(&self, live: Live) {
        let mut st = self.state();
        st.presigned.clear();
        st.live = Some(live);
    }

    fn uninstall(&self, conn: &Connection) {
        let mut st = self.state();
        if st
            .live
            .as_ref()
            .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
        {
            st.live = None;
            st.presigned.clear();
        }
    }

    /// A verified server envelope on the control stream.
    fn on_control_frame(
        &self,
        frame: Vec<u8>,
        pins: &Pins,
        conn: &Connection,
        now_us: u64,
    ) -> Result<()> {
        let mut st = self.state();
        let AgentState {
            live, jobs, outbox, ..
        } = &mut *st;
        let Some(live) = live
            .as_mut()
            .filter(|l| l.conn.stable_id() == conn.stable_id())
        else {
            return Ok(());
        };
        let msg = live
            .inbound
            .accept(Envelope::parse(frame)?, &SERVER_SENDER, &pins.server_key)?
            .into_message();
        if let Message::JobResultAck { job_id } = msg {
            outbox.remove(&job_id);
            let t = jobs.entry(job_id).or_default();
            t.acks += 1;
            t.first_ack_us.get_or_insert(now_us);
        }
        // JobCancel: nothing runs, so nothing to kill. ConfigUpdate, Ack: nothing to do here.
        Ok(())
    }

    /// The first frame of a job stream: verify envelope and grant, then answer like an agent
    /// that runs a no-op instantly. Returns the frames to write back on the stream.
    fn on_dispatch(
        &self,
        frame: Vec<u8>,
        pins: &Pins,
        conn: &Connection,
        now_us: u64,
    ) -> Result<Vec<Vec<u8>>> {
        let now = now_ms();
        let mut st = self.state();
        let AgentState {
            live, jobs, outbox, ..
        } = &mut *st;
        let live = live
            .as_mut()
            .filter(|l| l.conn.stable_id() == conn.stable_id())
            .context("dispatch on a stale connection")?;
        let msg = live
            .inbound
            .accept(Envelope::parse(frame)?, &SERVER_SENDER, &pins.server_key)?
            .into_message();
        let Message::JobDispatch(dispatch) = msg else {
            bail!("job stream opened with {:?}", msg.kind());
        };
        let mut seal = |m: Message| live.outbound.seal(m, now);
        let job = match dispatch.verify(&pins.server_key, &self.id, now, GRANT_SKEW_MS) {
            Ok(job) => job,
            Err(refusal) => {
                let job_id = dispatch.claimed_job_id().unwrap_or_default();
                let t = jobs.entry(job_id).or_default();
                t.dispatches += 1;
                t.refusals += 1;
                t.refusal = Some(refusal.to_string());
                return Ok(vec![seal(Message::JobAck(JobAck {
                    job_id,
                    outcome: JobAckOutcome::Refused(refusal.to_string()),
                }))]);
            }
        };
        let job_id = job.job_id;
        let t = jobs.entry(job_id).or_default();
        t.dispatches += 1;
        t.first_dispatch_us.get_or_insert(now_us);
        if t.executions > 0 {
            // In the ledger already: never run twice; resend the result if still unacked.
            t.duplicates += 1;
            let mut out = vec![seal(Message::JobAck(JobAck {
                job_id,
                outcome: JobAckOutcome::Duplicate,
            }))];
            if let Some(result) = outbox.get(&job_id) {
                t.results_sent += 1;
                out.push(seal(Message::JobResult(result.clone())));
            }
            return Ok(out);
        }
        let supported =
            matches!(&job.spec.payload, JobPayload::RunScript(s) if s.interpreter == "sh");
        if !supported {
            let reason = format!("unsupported job {}", job.spec.payload.type_name());
            t.refusals += 1;
            t.refusal = Some(reason.clone());
            return Ok(vec![seal(Message::JobAck(JobAck {
                job_id,
                outcome: JobAckOutcome::Refused(reason),
            }))]);
        }
        t.executions += 1;
        t.results_sent += 1;
        let result = JobResult {
            job_id,
            end: JobEnd::Succeeded,
            exit_code: Some(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            data: None,
            error: None,
            started_at_ms: now,
            finished_at_ms: now,
        };
        outbox.insert(job_id, result.clone());
        Ok(vec![
            seal(Message::JobAck(JobAck {
                job_id,
                outcome: JobAckOutcome::Accepted,
            })),
            seal(Message::JobStarted {
                job_id,
                started_at_ms: now,
            }),
            seal(Message::JobResult(result)),
        ])
    }

    /// Results still in the outbox, sealed for the current session (one uni stream each).
    fn seal_outbox(&self, conn: &Connection) -> Vec<Vec<u8>> {
        let now = now_ms();
        let mut st = self.state();
        let AgentState {
            live, jobs, outbox, ..
        } = &mut *st;
        let Some(live) = live
            .as_mut()
            .filter(|l| l.conn.stable_id() == conn.stable_id())
        else {
            return Vec::new();
        };
        outbox
            .values()
            .map(|r| {
                let t = jobs.entry(r.job_id).or_default();
                t.results_sent += 1;
                t.results_replayed += 1;
                live.outbound.seal(Message::JobResult(r.clone()), now)
            })
            .collect()
    }
}

/// State shared by every agent task of a fleet.
pub struct Shared {
    pub epoch: Instant,
    pub pins: Pins,
    config: quinn::ClientConfig,
    endpoints: Endpoints,
    ramp: Arc<Semaphore>,
    cfg: FleetConfig,
    /// Agents with a live session right now.
    pub online: AtomicUsize,
    pub welcomes: AtomicU64,
    /// Server envelopes that failed verification, or broken job streams.
    pub protocol_errors: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn count_error(&self, kind: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(kind).or_default() += 1;
    }
}

pub struct Fleet {
    pub agents: Vec<Arc<SimAgent>>,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("agents", &self.agents.len())
            .finish_non_exhaustive()
    }
}

struct Handshaken {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    inbound: InboundSession,
    outbound: OutboundSession,
    config: AgentConfig,
}

impl Fleet {
    /// Starts one task per identity; each connects (the first time through the ramp), says hello
    /// and stays connected until [`Fleet::stop`].
    pub fn start(
        identities: Vec<Identity>,
        endpoints: Endpoints,
        pins: Pins,
        cfg: FleetConfig,
    ) -> Result<Self> {
        let config = client_config(pins.fingerprint, cfg.idle_timeout)?;
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            pins,
            config,
            endpoints,
            ramp: Arc::new(Semaphore::new(cfg.ramp.max(1))),
            cfg,
            online: AtomicUsize::new(0),
            welcomes: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        });
        let (stop, _) = watch::channel(false);
        let agents: Vec<Arc<SimAgent>> = identities
            .into_iter()
            .enumerate()
            .map(|(idx, id)| {
                Arc::new(SimAgent {
                    idx,
                    id: id.id,
                    key: id.key,
                    state: Mutex::new(AgentState::default()),
                    welcomes: AtomicU64::new(0),
                    welcome_us: AtomicU64::new(0),
                    heartbeats_sent: AtomicU64::new(0),
                    metrics_sent: AtomicU64::new(0),
                })
            })
            .collect();
        let tasks = agents
            .iter()
            .map(|a| tokio::spawn(run_agent(a.clone(), shared.clone(), stop.subscribe())))
            .collect();
        Ok(Self {
            agents,
            shared,
            stop,
            tasks,
        })
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn online(&self) -> usize {
        self.shared.online.load(Ordering::Relaxed)
    }

    pub fn now_us(&self) -> u64 {
        self.shared.now_us()
    }

    /// Agents whose last `Welcome` came at or after `since_us`.
    pub fn welcomed_since(&self, since_us: u64) -> usize {
        self.agents
            .iter()
            .filter(|a| a.welcome_us.load(Ordering::Relaxed) >= since_us.max(1))
            .count()
    }

    /// The latest first-welcome-after-`since_us` over all agents, if all were welcomed since.
    pub fn last_welcome_since(&self, since_us: u64) -> Option<u64> {
        let mut last = 0;
        for a in &self.agents {
            let w = a.welcome_us.load(Ordering::Relaxed);
            if w < since_us.max(1) {
                return None;
            }
            last = last.max(w);
        }
        Some(last)
    }

    pub fn set_quiet(&self, quiet: bool) {
        for a in &self.agents {
            a.set_quiet(quiet);
        }
    }

    /// Connection failures and losses seen by the agents, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.shared
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn protocol_errors(&self) -> u64 {
        self.shared.protocol_errors.load(Ordering::Relaxed)
    }

    /// Stops every agent (QUIC close with code 0) and waits for the tasks, at most `timeout`.
    pub async fn stop(self, timeout: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        for t in self.tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                break;
            }
        }
        self.shared.endpoints.close().await;
    }
}

async fn run_agent(agent: Arc<SimAgent>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut rng = Rng::new();
    // The real agent's backoff: full jitter, reset after a live session (so a lost connection
    // retries within 0–500 ms), short retries while the server refuses outright (restarting).
    let mut backoff = Backoff::new(shared.cfg.base_backoff, shared.cfg.max_backoff);
    let mut ramped = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let permit = if ramped {
            None
        } else {
            shared.ramp.clone().acquire_owned().await.ok()
        };
        let result =
            tokio::time::timeout(shared.cfg.handshake_timeout, handshake(&agent, &shared)).await;
        drop(permit);
        let refused = match result {
            Ok(Ok(h)) => {
                ramped = true;
                backoff.reset();
                match live_loop(&agent, &shared, h, &mut stop, &mut rng).await {
                    Ended::Stopped => return,
                    Ended::Lost(kind) => shared.count_error(format!("lost:{kind}")),
                }
                false
            }
            Ok(Err(kind)) => {
                shared.count_error(format!("connect:{kind}"));
                kind == REFUSED
            }
            Err(_) => {
                shared.count_error("connect:handshake_timeout".into());
                false
            }
        };
        let delay = if refused {
            backoff.next_delay_refused(rng.next_u64())
        } else {
            backoff.next_delay(rng.next_u64())
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn handshake(agent: &SimAgent, shared: &Shared) -> Result<Handshaken, String> {
    let (endpoint, target) = shared.endpoints.for_agent(agent.idx);
    let conn = endpoint
        .connect_with(shared.config.clone(), target, SERVER_NAME)
        .map_err(|e| format!("connect:{e}"))?
        .await
        .map_err(|e| close_kind(&e))?;
    let fail = |conn: &Connection, what: &str| match conn.close_reason() {
        Some(reason) => close_kind(&reason),
        None => what.to_string(),
    };
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| close_kind(&e))?;
    let frame = read_frame(&mut recv)
        .await
        .map_err(|_| fail(&conn, "no_challenge"))?;
    let parsed = Envelope::parse(frame).map_err(|e| format!("challenge:{e}"))?;
    let (mut inbound, _) = InboundSession::from_challenge(parsed, &shared.pins.server_key)
        .map_err(|e| format!("challenge:{e}"))?;
    let mut outbound = OutboundSession::new(agent.id, inbound.nonce(), agent.key.clone());
    let hello = Hello {
        agent_version: AGENT_VERSION.into(),
        hostname: format!("sim-{:06}", agent.idx),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        inventory: inventory(agent.idx),
    };
    write_frame(&mut send, &outbound.seal(Message::Hello(hello), now_ms()))
        .await
        .map_err(|_| fail(&conn, "hello_write"))?;
    let frame = read_frame(&mut recv)
        .await
        .map_err(|_| fail(&conn, "no_welcome"))?;
    let msg = Envelope::parse(frame)
        .and_then(|e| inbound.accept(e, &SERVER_SENDER, &shared.pins.server_key))
        .map_err(|e| format!("welcome:{e}"))?
        .into_message();
    let Message::Welcome(welcome) = msg else {
        return Err(format!("expected welcome, got {:?}", msg.kind()));
    };
    Ok(Handshaken {
        conn,
        send,
        recv,
        inbound,
        outbound,
        config: welcome.config.clamped(),
    })
}

enum Ended {
    Stopped,
    Lost(String),
}

/// Aborts a task when dropped, so helper tasks end with their session.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn interval_with_phase(period_s: u32, rng: &mut Rng) -> tokio::time::Interval {
    let period = Duration::from_secs(u64::from(period_s.max(1)));
    let first = tokio::time::Instant::now() + rng.duration_up_to(period) + Duration::from_millis(1);
    let mut i = tokio::time::interval_at(first, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

async fn live_loop(
    agent: &Arc<SimAgent>,
    shared: &Arc<Shared>,
    h: Handshaken,
    stop: &mut watch::Receiver<bool>,
    rng: &mut Rng,
) -> Ended {
    let Handshaken {
        conn,
        send,
        recv,
        inbound,
        outbound,
        config,
    } = h;
    agent.install(Live {
        conn: conn.clone(),
        inbound,
        outbound,
    });
    // The control stream's send side stays open for the whole session: finishing it would end
    // the session on the server.
    let _control_send = send;
    agent.welcomes.fetch_add(1, Ordering::Relaxed);
    agent
        .welcome_us
        .store(shared.now_us().max(1), Ordering::Relaxed);
    shared.welcomes.fetch_add(1, Ordering::Relaxed);
    shared.online.fetch_add(1, Ordering::Relaxed);

    let _reader = AbortOnDrop(tokio::spawn(control_reader(
        agent.clone(),
        shared.clone(),
        conn.clone(),
        recv,
    )));
    let _jobs = AbortOnDrop(tokio::spawn(accept_jobs(
        agent.clone(),
        shared.clone(),
        conn.clone(),
    )));
    let _replay = AbortOnDrop(tokio::spawn(replay_outbox(agent.clone(), conn.clone())));
    let mut heartbeat = interval_with_phase(config.heartbeat_interval_s, rng);
    let mut metrics = interval_with_phase(config.metrics_interval_s, rng);
    let ended = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if let Err(kind) = agent.send_heartbeat(&conn) {
                    break Ended::Lost(kind);
                }
            }
            _ = metrics.tick(), if shared.cfg.metrics => {
                if let Some(frame) = agent.seal_metrics(&conn) {
                    let conn = conn.clone();
                    tokio::spawn(async move { let _ = send_on_uni(&conn, &frame).await; });
                }
            }
            err = conn.closed() => break Ended::Lost(close_kind(&err)),
            _ = stop.changed() => {
                conn.close(VarInt::from_u32(CloseCode::Normal as u32), b"bench done");
                break Ended::Stopped;
            }
        }
    };
    agent.uninstall(&conn);
    shared.online.fetch_sub(1, Ordering::Relaxed);
    ended
}

async fn control_reader(
    agent: Arc<SimAgent>,
    shared: Arc<Shared>,
    conn: Connection,
    mut recv: RecvStream,
) {
    while let Ok(frame) = read_frame(&mut recv).await {
        if let Err(err) = agent.on_control_frame(frame, &shared.pins, &conn, shared.now_us()) {
            shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
            shared.count_error(format!("protocol:control:{err}"));
            conn.close(
                VarInt::from_u32(CloseCode::ProtocolError as u32),
                b"bad server envelope",
            );
            return;
        }
    }
}

async fn accept_jobs(agent: Arc<SimAgent>, shared: Arc<Shared>, conn: Connection) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(job_stream(
            agent.clone(),
            shared.clone(),
            conn.clone(),
            send,
            recv,
        ));
    }
}

async fn job_stream(
    agent: Arc<SimAgent>,
    shared: Arc<Shared>,
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let Ok(frame) = read_frame(&mut recv).await else {
        return;
    };
    let frames = match agent.on_dispatch(frame, &shared.pins, &conn, shared.now_us()) {
        Ok(frames) => frames,
        Err(err) => {
            if conn.close_reason().is_none() {
                shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
                shared.count_error(format!("protocol:dispatch:{err}"));
            }
            return;
        }
    };
    for frame in frames {
        if write_frame(&mut send, &frame).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    // Let the server finish its side rather than resetting it by dropping the stream.
    let _ = tokio::time::timeout(Duration::from_secs(60), recv.read_to_end(64 * 1024)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

async fn replay_outbox(agent: Arc<SimAgent>, conn: Connection) {
    for frame in agent.seal_outbox(&conn) {
        if send_on_uni(&conn, &frame).await.is_err() {
            return;
        }
    }
}
