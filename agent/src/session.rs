//! Enrolment and the connected life of an agent: hello, heartbeats, metrics, config updates,
//! and reconnection with backoff.

use std::path::PathBuf;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use reap3r_wire::{
    AgentConfig, Approval, CloseCode, CloseReason, EnrolRequest, Hello, Message, SigningKey,
    VerifyingKey,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::files::FileHost;
use crate::identity::{AgentIdentity, IdentityStore};
use crate::identity::{ReleasePin, pin_release_key};
use crate::inventory::{self, Sampler};
use crate::jobs::{ConfigRequest, EngineOptions, JobEngine};
use crate::link::now_ms;
use crate::metrics::{Outbox, sample_forever, send_buffered};
use crate::protocol::{Challenged, Effect, FrameError};
use crate::shell::ShellHost;
use crate::transport::{self, connection_error, read_frame, write_frame};
use crate::{AGENT_VERSION, AgentError, Backoff, CAPABILITIES};

/// How long the server has to send the dispatch envelope on a job stream it opened.
const DISPATCH_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// From dialling to the server's welcome.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs one step of the connect sequence, failing it as `Lost` once `deadline` has passed.
async fn before<T>(
    deadline: tokio::time::Instant,
    what: &str,
    step: impl std::future::Future<Output = Result<T, AgentError>>,
) -> Result<T, AgentError> {
    tokio::time::timeout_at(deadline, step)
        .await
        .map_err(|_| AgentError::Lost(format!("no {what} within the connect timeout")))?
}

#[derive(Debug, Clone)]
pub struct EnrolOptions {
    pub server: String,
    pub token: String,
    /// SHA-256 of the server certificate, hex.
    pub fingerprint: String,
    /// The server's Ed25519 public key, hex.
    pub server_key: String,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolOutcome {
    pub agent_id: uuid::Uuid,
    pub pending_approval: bool,
}

fn parse_hex32(what: &str, text: &str) -> Result<[u8; 32], AgentError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AgentError::Argument(format!("{what} must be 64 hex characters")))
}

/// Makes a key pair (and the sealing key), registers it with the token, and stores identity and
/// pins.
pub async fn enrol(opts: &EnrolOptions) -> Result<EnrolOutcome, AgentError> {
    let fingerprint = parse_hex32("--fingerprint", &opts.fingerprint)?;
    let server_key = VerifyingKey::from_bytes(&parse_hex32("--server-key", &opts.server_key)?)
        .map_err(|_| AgentError::Argument("--server-key is not an Ed25519 public key".into()))?;
    let store = IdentityStore::open(&opts.data_dir)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| AgentError::Argument(format!("no randomness: {e}")))?;
    let signing_key = SigningKey::from_bytes(&seed);
    // Made now, so an enrolment never succeeds without a key to save.
    let sealing = crate::identity::new_sealing_key()?;

    let addr = transport::resolve(&opts.server).await?;
    let endpoint = transport::client_endpoint(addr)?;
    let (conn, mut send, mut recv) = transport::connect(
        &endpoint,
        addr,
        transport::client_config(fingerprint, Duration::from_secs(30))?,
    )
    .await?;
    let result = async {
        let challenged = read_challenge(&conn, &mut recv, &server_key).await?;
        let summary = inventory::summary();
        let request = EnrolRequest {
            token: opts.token.clone(),
            public_key: signing_key.verifying_key().to_bytes(),
            hostname: inventory::hostname(),
            os: summary.os_name,
            arch: summary.arch,
            agent_version: AGENT_VERSION.into(),
        };
        let (frame, pending) = challenged.enrol(&signing_key, request, now_ms());
        write_frame(&mut send, &frame).await?;
        Ok::<_, AgentError>(pending.enrolled(read_or_close_reason(&conn, &mut recv).await?)?)
    }
    .await;
    conn.close(VarInt::from_u32(CloseCode::Normal as u32), b"enrolled");
    endpoint.wait_idle().await;
    let result = result?;
    let identity = AgentIdentity {
        agent_id: result.agent_id,
        signing_key,
        sealing,
        server: opts.server.clone(),
        fingerprint,
        server_key,
        config: AgentConfig::default(),
        release_key: None,
    };
    store.save(&identity)?;
    Ok(EnrolOutcome {
        agent_id: uuid::Uuid::from_bytes(result.agent_id),
        pending_approval: result.approval == Approval::Pending,
    })
}

/// The first envelope must be a challenge signed by the pinned server key.
async fn read_challenge(
    conn: &Connection,
    recv: &mut quinn::RecvStream,
    server_key: &VerifyingKey,
) -> Result<Challenged, AgentError> {
    let frame = read_or_close_reason(conn, recv).await?;
    Ok(Challenged::from_frame(frame, server_key)?)
}

/// Reads a frame; if the stream ends because the server closed the connection, reports the
/// server's close code and reason instead of a bare stream error.
async fn read_or_close_reason(
    conn: &Connection,
    recv: &mut quinn::RecvStream,
) -> Result<Vec<u8>, AgentError> {
    match read_frame(recv).await {
        Ok(frame) => Ok(frame),
        Err(err) => match conn.close_reason() {
            Some(reason) => Err(connection_error(reason)),
            None => Err(err),
        },
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data_dir: PathBuf,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Command run by reboot and shutdown jobs as `<cmd> -r|-h now|+<minutes>`.
    pub power_command: String,
    /// The shell remote shells run; `None` turns remote shells off.
    pub shell: Option<PathBuf>,
    /// Whether the server may push files to this agent and pull files from it.
    pub files: bool,
}

impl RunOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            power_command: "shutdown".into(),
            shell: Some(crate::shell::default_shell()),
            files: true,
        }
    }
}

/// Runs until `shutdown` turns true: connect, stay connected, reconnect with backoff.
pub async fn run(opts: RunOptions, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    let store = IdentityStore::open(&opts.data_dir)?;
    let mut identity = store.load()?;
    info!(agent_id = %uuid::Uuid::from_bytes(identity.agent_id), server = %identity.server, "agent starting");
    // Jobs belong to the whole run, not to one connection.
    let (config_tx, mut config_rx) = mpsc::unbounded_channel();
    let engine = JobEngine::open(
        EngineOptions {
            data_dir: opts.data_dir.clone(),
            agent_id: identity.agent_id,
            server_key: identity.server_key,
            sealing: identity.sealing.clone(),
            power_command: opts.power_command.clone(),
        },
        config_tx,
    )?;
    let shells = ShellHost::new(
        identity.agent_id,
        identity.signing_key.clone(),
        identity.server_key,
        opts.shell.clone(),
    );
    let files = FileHost::new(
        identity.agent_id,
        identity.signing_key.clone(),
        identity.server_key,
        opts.files,
    );
    let addr = transport::resolve(&identity.server).await?;
    let endpoint = transport::client_endpoint(addr)?;
    let mut backoff = Backoff::new(opts.base_backoff, opts.max_backoff);
    // Metrics are sampled for the whole run, connected or not; each connection drains them.
    let outbox = Outbox::new(identity.config.metrics_interval_s);
    let (metrics_interval, interval_rx) = watch::channel(identity.config.metrics_interval_s);
    let _sampler = AbortOnDrop(tokio::spawn(sample_forever(outbox.clone(), interval_rx)));
    let mut session = Session {
        endpoint: &endpoint,
        addr,
        identity: &mut identity,
        store: &store,
        engine: &engine,
        shells: shells.clone(),
        files,
        config_rx: &mut config_rx,
        shutdown: &mut shutdown,
        outbox,
        metrics_interval,
    };
    loop {
        if *session.shutdown.borrow() {
            break;
        }
        let delay = match session.connected().await {
            Ok(Ended::Shutdown) => break,
            Ok(Ended::Lost(reason)) => {
                warn!(%reason, "connection lost; reconnecting");
                backoff.reset();
                backoff.next_random()
            }
            Err(AgentError::ConnectionRefused) => {
                debug!("server refused the connection; it may be restarting");
                backoff.next_random_refused()
            }
            Err(err @ AgentError::Pin(_)) => {
                warn!(%err, "refusing this server");
                backoff.next_random()
            }
            Err(err) => {
                warn!(%err, "session failed");
                backoff.next_random()
            }
        };
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        // Offline, a config_update job is still applied (and persisted) at once.
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = session.shutdown.changed() => break,
                Some(req) = session.config_rx.recv() => {
                    let applied = apply_config(session.identity, session.store, req.config);
                    follow_interval(&session.metrics_interval, session.identity.config.metrics_interval_s);
                    let _ = req.reply.send(applied.map(|_| session.identity.config).map_err(|e| e.to_string()));
                }
            }
        }
    }
    engine.shutdown().await;
    // Every shell's session ends with the agent (they were told already if it was connected).
    shells.shutdown().await;
    endpoint.wait_idle().await;
    Ok(())
}

/// What a connection attempt works with; everything here outlives one connection.
struct Session<'a> {
    endpoint: &'a Endpoint,
    addr: std::net::SocketAddr,
    identity: &'a mut AgentIdentity,
    store: &'a IdentityStore,
    engine: &'a JobEngine,
    /// Remote shells; they outlive a connection for a grace period.
    shells: ShellHost,
    /// File transfers; a cut one is resumed by the server on a new channel.
    files: FileHost,
    config_rx: &'a mut mpsc::UnboundedReceiver<ConfigRequest>,
    shutdown: &'a mut watch::Receiver<bool>,
    /// Buffered metrics samples, sent by each connection in turn.
    outbox: Outbox,
    /// Tells the sampler the metrics interval the server set.
    metrics_interval: watch::Sender<u32>,
}

enum Ended {
    Shutdown,
    /// The session was live and then ended; the reason is logged.
    Lost(String),
}

/// A job stream the server opened, with the dispatch envelope read from it.
struct JobStream {
    frame: Vec<u8>,
    send: SendStream,
    recv: RecvStream,
}

impl Session<'_> {
    async fn connected(&mut self) -> Result<Ended, AgentError> {
        let identity = &mut *self.identity;
        let config = identity.config;
        let idle = Duration::from_secs(u64::from(config.heartbeat_interval_s) * 3 + 10);
        // Until the welcome, an attempt has a deadline of its own: one stuck in QUIC's
        // retransmission backoff (say, sent while the server restarted) is retried afresh.
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let (conn, mut send, mut recv) = before(
            deadline,
            "connection",
            transport::connect(
                self.endpoint,
                self.addr,
                transport::client_config(identity.fingerprint, idle)?,
            ),
        )
        .await?;
        // However this connection ends, it is closed, and jobs stop using it.
        let _closer = CloseOnDrop(conn.clone());
        let challenged = before(
            deadline,
            "challenge",
            read_challenge(&conn, &mut recv, &identity.server_key),
        )
        .await?;
        let mut capabilities: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
        capabilities.extend(self.engine.capabilities());
        if self.shells.enabled() {
            capabilities.push(reap3r_wire::SHELL_CAPABILITY.into());
        }
        if self.files.enabled() {
            capabilities.push(reap3r_wire::FILE_CAPABILITY.into());
        }
        if let Some(key) = &identity.release_key {
            capabilities.push(reap3r_wire::release_key_capability(&key.to_bytes()));
        }
        let hello = Hello {
            agent_version: AGENT_VERSION.into(),
            hostname: inventory::hostname(),
            capabilities,
            inventory: inventory::summary(),
            sealing_key: Some(identity.sealing.public()),
        };
        let (frame, pending) =
            challenged.hello(identity.agent_id, &identity.signing_key, hello, now_ms());
        write_frame(&mut send, &frame).await?;
        let reply = before(deadline, "welcome", read_or_close_reason(&conn, &mut recv)).await?;
        let (session, welcome) = pending.welcome(reply)?;
        // From here on results go to this connection; the outbox is replayed on it.
        match pin_release_key(identity.release_key.as_ref(), welcome.release_key) {
            ReleasePin::Pinned(key) => {
                identity.release_key = Some(key);
                match self.store.save(identity) {
                    Ok(()) => {
                        info!(release_key = %hex::encode(key.to_bytes()), "pinned the release key")
                    }
                    Err(err) => warn!(%err, "could not persist the release key"),
                }
            }
            ReleasePin::Kept => {}
            ReleasePin::Refused => {
                warn!(
                    "the server offered another release key than the pinned one; keeping the pinned one"
                );
            }
        }
        let (link, config) = self.engine.link_up(conn.clone(), session, &welcome);
        let _link_guard = LinkDown(self.engine);
        if let Err(err) = apply_config(identity, self.store, config) {
            warn!(%err, "could not persist config");
        }
        follow_interval(&self.metrics_interval, identity.config.metrics_interval_s);
        info!(
            heartbeat_s = identity.config.heartbeat_interval_s,
            "connected"
        );

        // Frames are read by their own task: reading is not cancel-safe inside select!.
        let (frames_tx, mut frames) = mpsc::channel::<Result<Vec<u8>, AgentError>>(16);
        let reader_conn = conn.clone();
        let _reader = AbortOnDrop(tokio::spawn(async move {
            loop {
                let frame = read_or_close_reason(&reader_conn, &mut recv).await;
                let end = frame.is_err();
                if frames_tx.send(frame).await.is_err() || end {
                    return;
                }
            }
        }));
        // Job streams: the server opens one bidirectional stream per dispatch.
        let (jobs_tx, mut job_streams) = mpsc::channel::<JobStream>(16);
        let _acceptor = AbortOnDrop(tokio::spawn(accept_job_streams(conn.clone(), jobs_tx)));
        // Buffered and new metrics go out on this connection until it ends.
        let _metrics = AbortOnDrop(tokio::spawn(send_buffered(
            link.clone(),
            self.outbox.clone(),
        )));
        let mut sampler = Sampler::new();
        let mut heartbeat = interval(identity.config.heartbeat_interval_s);
        let ended = loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let datagram = link.seal_datagram(Message::Heartbeat(sampler.heartbeat()))?;
                    if let Err(err) = conn.send_datagram(datagram.into()) {
                        break Ended::Lost(err.to_string());
                    }
                    // A result whose ack went missing goes again; the server acks every copy.
                    for message in link.resend_due() {
                        let link = link.clone();
                        tokio::spawn(async move {
                            match link.send_uni(message).await {
                                Ok(()) => warn!("result sent again: no ack for it yet"),
                                Err(err) => debug!(%err, "result not sent again; it stays in the outbox"),
                            }
                        });
                    }
                }
                frame = frames.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(err)) => break Ended::Lost(err.to_string()),
                        None => break Ended::Lost("control stream closed".into()),
                    };
                    let effects = match link.on_control(frame) {
                        Ok(effects) => effects,
                        Err(FrameError::Wire(err)) => return Err(err.into()),
                        Err(err @ FrameError::NotLive) => break Ended::Lost(err.to_string()),
                    };
                    let mut closed = None;
                    for effect in effects {
                        match effect {
                            Effect::ApplyConfig(cfg) => {
                                if let Err(err) = apply_config(identity, self.store, cfg) {
                                    warn!(%err, "could not persist config");
                                }
                                heartbeat = interval(identity.config.heartbeat_interval_s);
                                follow_interval(&self.metrics_interval, identity.config.metrics_interval_s);
                            }
                            Effect::CancelJob { job_id } => self.engine.cancel(job_id),
                            Effect::Acked { job_id, kept } => {
                                let job_id = uuid::Uuid::from_bytes(job_id);
                                if kept {
                                    info!(%job_id, "result acknowledged");
                                } else {
                                    debug!(%job_id, "ack for a result not in the outbox");
                                }
                            }
                            Effect::Closed(reason) => closed = Some(format!("{}: {}", reason.code, reason.message)),
                            Effect::Ignored(kind) => warn!(?kind, "ignoring unexpected server message"),
                            other => crate::jobs::log_effect(&other),
                        }
                    }
                    if let Some(reason) = closed {
                        break Ended::Lost(reason);
                    }
                }
                Some(stream) = job_streams.recv() => {
                    let JobStream { frame, send, recv } = stream;
                    // Channels (shells, file transfers) go to their hosts; the rest are jobs.
                    match reap3r_wire::Envelope::<reap3r_wire::Unverified>::peek_kind(&frame) {
                        Some(reap3r_wire::MessageKind::ShellOpen) => {
                            if let Some(nonce) = link.session_nonce() {
                                self.shells.serve(frame, send, recv, nonce);
                            }
                        }
                        Some(reap3r_wire::MessageKind::FileOpen) => {
                            if let Some(nonce) = link.session_nonce() {
                                self.files.serve(frame, send, recv, nonce);
                            }
                        }
                        _ => self.engine.dispatch(frame, send, recv, link.clone()),
                    }
                }
                Some(req) = self.config_rx.recv() => {
                    // A config_update job: applied like a ConfigUpdate message.
                    let applied = apply_config(identity, self.store, req.config);
                    heartbeat = interval(identity.config.heartbeat_interval_s);
                    follow_interval(&self.metrics_interval, identity.config.metrics_interval_s);
                    let _ = req.reply.send(applied.map(|_| identity.config).map_err(|e| e.to_string()));
                }
                _ = self.shutdown.changed() => {
                    // Running jobs are stopped first, so their results can still go out here;
                    // shells end, and tell the server so on their channels.
                    self.engine.shutdown().await;
                    self.shells.shutdown().await;
                    if let Some(bye) = link.seal(Message::Close(CloseReason { code: CloseCode::Normal, message: "agent stopping".into() })) {
                        let _ = write_frame(&mut send, &bye).await;
                    }
                    let _ = send.finish();
                    // Give the goodbye a moment to be delivered before closing.
                    let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
                    conn.close(VarInt::from_u32(CloseCode::Normal as u32), b"agent stopping");
                    break Ended::Shutdown;
                }
            }
        };
        Ok(ended)
    }
}

/// Accepts the job streams the server opens and reads each one's first frame (in its own task,
/// so a slow stream holds up no other).
async fn accept_job_streams(conn: Connection, streams: mpsc::Sender<JobStream>) {
    while let Ok((send, mut recv)) = conn.accept_bi().await {
        let streams = streams.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(DISPATCH_READ_TIMEOUT, read_frame(&mut recv)).await {
                Ok(Ok(frame)) => {
                    let _ = streams.send(JobStream { frame, send, recv }).await;
                }
                Ok(Err(err)) => warn!(%err, "cannot read a job stream"),
                Err(_) => warn!("job stream sent no dispatch in time"),
            }
        });
    }
}

/// Stops the frame reader (and its connection handle) however the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Closes the connection when the session ends, even though job tasks hold handles to it.
struct CloseOnDrop(Connection);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0
            .close(VarInt::from_u32(CloseCode::Normal as u32), b"session ended");
    }
}

/// Tells the job engine the connection is gone.
struct LinkDown<'a>(&'a JobEngine);

impl Drop for LinkDown<'_> {
    fn drop(&mut self) {
        self.0.link_down();
    }
}

/// Clamps and adopts `config`, persisting it if it changed.
fn apply_config(
    identity: &mut AgentIdentity,
    store: &IdentityStore,
    config: AgentConfig,
) -> Result<(), AgentError> {
    let config = config.clamped();
    if identity.config != config {
        identity.config = config;
        store.save(identity)?;
    }
    Ok(())
}

/// Tells the sampler a new metrics interval, only if it changed (a reconnect that repeats the
/// same config must not move the sampling phase).
fn follow_interval(tx: &watch::Sender<u32>, seconds: u32) {
    tx.send_if_modified(|current| {
        let changed = *current != seconds;
        *current = seconds;
        changed
    });
}

fn interval(seconds: u32) -> tokio::time::Interval {
    let period = Duration::from_secs(u64::from(seconds.max(1)));
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}
