//! Enrolment and the connected life of an agent: hello, heartbeats, metrics, config updates,
//! and reconnection with backoff.

use std::path::PathBuf;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use reap3r_wire::{
    AgentConfig, Approval, CloseCode, CloseReason, EnrollRequest, Envelope, Hello, InboundSession,
    Message, OutboundSession, SERVER_SENDER, SigningKey, VerifyingKey,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::identity::{AgentIdentity, IdentityStore};
use crate::inventory::{self, Sampler};
use crate::jobs::{ConfigRequest, EngineOptions, JobEngine};
use crate::link::{Link, now_ms};
use crate::transport::{self, connection_error, read_frame, write_frame};
use crate::{AGENT_VERSION, AgentError, Backoff, CAPABILITIES};

/// How long the server has to send the dispatch envelope on a job stream it opened.
const DISPATCH_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC stream error code for a job stream whose dispatch envelope was not accepted.
const DISPATCH_REFUSED_CODE: u32 = CloseCode::ProtocolError as u32;
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
pub struct EnrollOptions {
    pub server: String,
    pub token: String,
    /// SHA-256 of the server certificate, hex.
    pub fingerprint: String,
    /// The server's Ed25519 public key, hex.
    pub server_key: String,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollOutcome {
    pub agent_id: uuid::Uuid,
    pub pending_approval: bool,
}

fn parse_hex32(what: &str, text: &str) -> Result<[u8; 32], AgentError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AgentError::Argument(format!("{what} must be 64 hex characters")))
}

/// Makes a key pair, registers it with the token, and stores identity and pins.
pub async fn enroll(opts: &EnrollOptions) -> Result<EnrollOutcome, AgentError> {
    let fingerprint = parse_hex32("--fingerprint", &opts.fingerprint)?;
    let server_key = VerifyingKey::from_bytes(&parse_hex32("--server-key", &opts.server_key)?)
        .map_err(|_| AgentError::Argument("--server-key is not an Ed25519 public key".into()))?;
    let store = IdentityStore::open(&opts.data_dir)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| AgentError::Argument(format!("no randomness: {e}")))?;
    let signing_key = SigningKey::from_bytes(&seed);

    let addr = transport::resolve(&opts.server).await?;
    let endpoint = transport::client_endpoint(addr)?;
    let (conn, mut send, mut recv) = transport::connect(
        &endpoint,
        addr,
        transport::client_config(fingerprint, Duration::from_secs(30))?,
    )
    .await?;
    let result = async {
        let (mut inbound, _) = read_challenge(&conn, &mut recv, &server_key).await?;
        let mut outbound = OutboundSession::new([0; 16], inbound.nonce(), signing_key.clone());
        let summary = inventory::summary();
        let request = EnrollRequest {
            token: opts.token.clone(),
            public_key: signing_key.verifying_key().to_bytes(),
            hostname: inventory::hostname(),
            os: summary.os_name,
            arch: summary.arch,
            agent_version: AGENT_VERSION.into(),
        };
        write_frame(
            &mut send,
            &outbound.seal(Message::Enroll(request), now_ms()),
        )
        .await?;
        match read_server_message(&conn, &mut recv, &mut inbound, &server_key).await? {
            Message::EnrollResult(r) => Ok(r),
            other => Err(AgentError::Refused {
                code: CloseCode::ProtocolError,
                reason: format!("unexpected {:?}", other.kind()),
            }),
        }
    }
    .await;
    conn.close(VarInt::from_u32(CloseCode::Normal as u32), b"enrolled");
    endpoint.wait_idle().await;
    let result = result?;
    let identity = AgentIdentity {
        agent_id: result.agent_id,
        signing_key,
        server: opts.server.clone(),
        fingerprint,
        server_key,
        config: AgentConfig::default(),
    };
    store.save(&identity)?;
    Ok(EnrollOutcome {
        agent_id: uuid::Uuid::from_bytes(result.agent_id),
        pending_approval: result.approval == Approval::Pending,
    })
}

/// The first envelope must be a challenge signed by the pinned server key.
async fn read_challenge(
    conn: &Connection,
    recv: &mut quinn::RecvStream,
    server_key: &VerifyingKey,
) -> Result<(InboundSession, u64), AgentError> {
    let frame = read_or_close_reason(conn, recv).await?;
    let (session, challenge) = InboundSession::from_challenge(Envelope::parse(frame)?, server_key)
        .map_err(|e| match e {
            reap3r_wire::WireError::BadSignature => AgentError::Pin("server key"),
            other => AgentError::Protocol(other),
        })?;
    Ok((session, challenge.server_time_ms))
}

async fn read_server_message(
    conn: &Connection,
    recv: &mut quinn::RecvStream,
    inbound: &mut InboundSession,
    server_key: &VerifyingKey,
) -> Result<Message, AgentError> {
    let frame = read_or_close_reason(conn, recv).await?;
    Ok(inbound
        .accept(Envelope::parse(frame)?, &SERVER_SENDER, server_key)?
        .into_message())
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
}

impl RunOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            power_command: "shutdown".into(),
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
            power_command: opts.power_command.clone(),
        },
        config_tx,
    )?;
    let addr = transport::resolve(&identity.server).await?;
    let endpoint = transport::client_endpoint(addr)?;
    let mut backoff = Backoff::new(opts.base_backoff, opts.max_backoff);
    let mut session = Session {
        endpoint: &endpoint,
        addr,
        identity: &mut identity,
        store: &store,
        engine: &engine,
        config_rx: &mut config_rx,
        shutdown: &mut shutdown,
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
                    let _ = req.reply.send(applied.map(|_| session.identity.config).map_err(|e| e.to_string()));
                }
            }
        }
    }
    engine.shutdown().await;
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
    config_rx: &'a mut mpsc::UnboundedReceiver<ConfigRequest>,
    shutdown: &'a mut watch::Receiver<bool>,
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
        let (mut inbound, _) = before(
            deadline,
            "challenge",
            read_challenge(&conn, &mut recv, &identity.server_key),
        )
        .await?;
        let link = Link::new(
            conn.clone(),
            OutboundSession::new(
                identity.agent_id,
                inbound.nonce(),
                identity.signing_key.clone(),
            ),
        );
        let mut capabilities: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
        capabilities.extend(self.engine.capabilities());
        let hello = Hello {
            agent_version: AGENT_VERSION.into(),
            hostname: inventory::hostname(),
            capabilities,
            inventory: inventory::summary(),
        };
        write_frame(&mut send, &link.seal(Message::Hello(hello))).await?;
        let welcome = match before(
            deadline,
            "welcome",
            read_server_message(&conn, &mut recv, &mut inbound, &identity.server_key),
        )
        .await?
        {
            Message::Welcome(w) => w,
            other => {
                return Err(AgentError::Refused {
                    code: CloseCode::ProtocolError,
                    reason: format!("expected welcome, got {:?}", other.kind()),
                });
            }
        };
        if let Err(err) = apply_config(identity, self.store, welcome.config) {
            warn!(%err, "could not persist config");
        }
        info!(
            heartbeat_s = identity.config.heartbeat_interval_s,
            "connected"
        );
        // From here on results go to this connection; the outbox is replayed on it.
        self.engine.link_up(link.clone());
        let _link_guard = LinkDown(self.engine);

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
        let mut sampler = Sampler::new();
        let mut heartbeat = interval(identity.config.heartbeat_interval_s);
        let mut metrics = interval(identity.config.metrics_interval_s);
        let ended = loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let datagram = link.seal_datagram(Message::Heartbeat(sampler.heartbeat()))?;
                    if let Err(err) = conn.send_datagram(datagram.into()) {
                        break Ended::Lost(err.to_string());
                    }
                }
                _ = metrics.tick() => {
                    // Sent by a task: opening a stream may wait for the server's credit, and
                    // the frame is sealed only once the stream is open.
                    let sample = Message::Metrics(sampler.metrics(now_ms()));
                    let link = link.clone();
                    tokio::spawn(async move {
                        if let Err(err) = link.send_uni(sample).await {
                            warn!(%err, "metrics not sent");
                        }
                    });
                }
                frame = frames.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(err)) => break Ended::Lost(err.to_string()),
                        None => break Ended::Lost("control stream closed".into()),
                    };
                    match inbound.accept(Envelope::parse(frame)?, &SERVER_SENDER, &identity.server_key)?.into_message() {
                        Message::ConfigUpdate(cfg) => {
                            if let Err(err) = apply_config(identity, self.store, cfg) {
                                warn!(%err, "could not persist config");
                            }
                            heartbeat = interval(identity.config.heartbeat_interval_s);
                            metrics = interval(identity.config.metrics_interval_s);
                        }
                        Message::JobCancel { job_id } => self.engine.cancel(job_id),
                        Message::JobResultAck { job_id } => self.engine.result_acked(job_id),
                        Message::Close(reason) => break Ended::Lost(format!("{}: {}", reason.code, reason.message)),
                        Message::Ack { .. } => {}
                        other => warn!(kind = ?other.kind(), "ignoring unexpected server message"),
                    }
                }
                Some(stream) = job_streams.recv() => {
                    let JobStream { frame, mut send, recv } = stream;
                    let accepted = Envelope::parse(frame)
                        .and_then(|env| inbound.accept(env, &SERVER_SENDER, &identity.server_key));
                    match accepted.map(|env| env.into_message()) {
                        Ok(Message::JobDispatch(dispatch)) => self.engine.dispatch(dispatch, send, recv, link.clone()),
                        Ok(other) => {
                            warn!(kind = ?other.kind(), "job stream did not start with a dispatch; dropped");
                            let _ = send.reset(VarInt::from_u32(DISPATCH_REFUSED_CODE));
                        }
                        Err(err) => {
                            warn!(%err, "job stream envelope refused; dropped");
                            let _ = send.reset(VarInt::from_u32(DISPATCH_REFUSED_CODE));
                        }
                    }
                }
                Some(req) = self.config_rx.recv() => {
                    // A config_update job: applied like a ConfigUpdate message.
                    let applied = apply_config(identity, self.store, req.config);
                    heartbeat = interval(identity.config.heartbeat_interval_s);
                    metrics = interval(identity.config.metrics_interval_s);
                    let _ = req.reply.send(applied.map(|_| identity.config).map_err(|e| e.to_string()));
                }
                _ = self.shutdown.changed() => {
                    // Running jobs are stopped first, so their results can still go out here.
                    self.engine.shutdown().await;
                    let bye = link.seal(Message::Close(CloseReason { code: CloseCode::Normal, message: "agent stopping".into() }));
                    let _ = write_frame(&mut send, &bye).await;
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

fn interval(seconds: u32) -> tokio::time::Interval {
    let period = Duration::from_secs(u64::from(seconds.max(1)));
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}
