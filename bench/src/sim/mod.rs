//! Simulated agents: real Ed25519 identities enrolled with a real token, speaking the real
//! protocol (signed envelopes, session nonce, replay windows) over real QUIC connections, many
//! multiplexed over a few client endpoints. Each agent behaves like `reap3r-agent run`: hello,
//! heartbeats as datagrams, metrics on uni streams, reconnection with jittered backoff; and for
//! jobs like the agent in docs/JOBS.md: it verifies each dispatch and its grant, answers on the
//! job's stream (ack, started, result) without running a process, keeps the result in an
//! in-memory outbox until `JobResultAck`, and resends unacknowledged results after a reconnect.
//!
//! The protocol itself (handshake, signing, the ledger rules, replay) is the real agent's core,
//! `reap3r_agent::protocol`; this module and [`agent`] only drive it over QUIC.
//!
//! - [`enrol`]: identities, enrolment, the shared client endpoints.
//! - [`agent`]: one simulated agent's state and its process-free job runner.
//! - here: the fleet, and each agent's connect / live / reconnect loop.

mod agent;
mod enrol;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use reap3r_agent::protocol::{Challenged, Session};
use reap3r_wire::{CloseCode, Hello, SERVER_NAME, Welcome};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use reap3r_agent::Backoff;

pub use agent::{HOT_CPU_CENTIPERCENT, JobTrack, Lane, Outgoing, SimAgent, sample};
pub use enrol::{Endpoints, Identity, enrol_all};

use crate::stats::Rng;
use crate::transport::{
    Pins, REFUSED, client_config, close_kind, read_frame, send_on_uni, write_frame,
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
    session: Session,
    welcome: Welcome,
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
            .map(|(idx, id)| Arc::new(SimAgent::new(idx, id.id, id.key, shared.pins.server_key)))
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
    let challenged = Challenged::from_frame(frame, &shared.pins.server_key)
        .map_err(|e| format!("challenge:{e}"))?;
    let hello = Hello {
        agent_version: AGENT_VERSION.into(),
        hostname: format!("sim-{:06}", agent.idx),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        inventory: agent::inventory(agent.idx),
        // Simulated agents take no sealed secrets: no X25519 key to make or announce.
        sealing_key: None,
    };
    let (frame, pending) = challenged.hello(agent.id, &agent.key, hello, now_ms());
    write_frame(&mut send, &frame)
        .await
        .map_err(|_| fail(&conn, "hello_write"))?;
    let frame = read_frame(&mut recv)
        .await
        .map_err(|_| fail(&conn, "no_welcome"))?;
    let (session, welcome) = pending.welcome(frame).map_err(|e| format!("welcome:{e}"))?;
    Ok(Handshaken {
        conn,
        send,
        recv,
        session,
        welcome,
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
        session,
        welcome,
    } = h;
    let (config, replay) = agent.install(conn.clone(), session, &welcome);
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
    let _replay = AbortOnDrop(tokio::spawn(replay_outbox(replay, conn.clone())));
    let mut heartbeat = interval_with_phase(config.heartbeat_interval_s, rng);
    let mut metrics = interval_with_phase(config.metrics_interval_s, rng);
    let ended = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if let Err(kind) = agent.send_heartbeat(&conn) {
                    break Ended::Lost(kind);
                }
                // As the real agent: a result whose ack went missing goes again.
                let resend = agent.resend_due(&conn);
                if !resend.is_empty() {
                    tokio::spawn(replay_outbox(resend, conn.clone()));
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
        if let Err(err) = agent.on_control_frame(frame, &conn, shared.now_us()) {
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
    let frames = match agent.on_dispatch(frame, &conn, shared.now_us()) {
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

async fn replay_outbox(frames: Vec<Vec<u8>>, conn: Connection) {
    for frame in frames {
        if send_on_uni(&conn, &frame).await.is_err() {
            return;
        }
    }
}
