//! Enrolment and the connected life of an agent: hello, heartbeats, metrics, config updates,
//! and reconnection with backoff.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::{Connection, Endpoint, VarInt};
use reap3r_wire::{
    AgentConfig, Approval, CloseCode, CloseReason, EnrollRequest, Envelope, Hello, InboundSession,
    Message, OutboundSession, SERVER_SENDER, SigningKey, VerifyingKey,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::identity::{AgentIdentity, IdentityStore};
use crate::inventory::{self, Sampler};
use crate::transport::{self, connection_error, read_frame, write_frame};
use crate::{AGENT_VERSION, AgentError, Backoff, CAPABILITIES};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
}

impl RunOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Runs until `shutdown` turns true: connect, stay connected, reconnect with backoff.
pub async fn run(opts: RunOptions, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    let store = IdentityStore::open(&opts.data_dir)?;
    let mut identity = store.load()?;
    let addr = transport::resolve(&identity.server).await?;
    let endpoint = transport::client_endpoint(addr)?;
    let mut backoff = Backoff::new(opts.base_backoff, opts.max_backoff);
    info!(agent_id = %uuid::Uuid::from_bytes(identity.agent_id), server = %identity.server, "agent starting");
    loop {
        if *shutdown.borrow() {
            break;
        }
        match connected(&endpoint, addr, &mut identity, &store, &mut shutdown).await {
            Ok(Ended::Shutdown) => break,
            Ok(Ended::Lost(reason)) => {
                warn!(%reason, "connection lost; reconnecting");
                backoff.reset();
            }
            Err(err @ AgentError::Pin(_)) => warn!(%err, "refusing this server"),
            Err(err) => warn!(%err, "session failed"),
        }
        let delay = backoff.next_random();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
    endpoint.wait_idle().await;
    Ok(())
}

enum Ended {
    Shutdown,
    /// The session was live and then ended; the reason is logged.
    Lost(String),
}

async fn connected(
    endpoint: &Endpoint,
    addr: std::net::SocketAddr,
    identity: &mut AgentIdentity,
    store: &IdentityStore,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Ended, AgentError> {
    let config = identity.config;
    let idle = Duration::from_secs(u64::from(config.heartbeat_interval_s) * 3 + 10);
    let (conn, mut send, mut recv) = transport::connect(
        endpoint,
        addr,
        transport::client_config(identity.fingerprint, idle)?,
    )
    .await?;
    let (mut inbound, _) = read_challenge(&conn, &mut recv, &identity.server_key).await?;
    let mut outbound = OutboundSession::new(
        identity.agent_id,
        inbound.nonce(),
        identity.signing_key.clone(),
    );
    let hello = Hello {
        agent_version: AGENT_VERSION.into(),
        hostname: inventory::hostname(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        inventory: inventory::summary(),
    };
    write_frame(&mut send, &outbound.seal(Message::Hello(hello), now_ms())).await?;
    let welcome =
        match read_server_message(&conn, &mut recv, &mut inbound, &identity.server_key).await? {
            Message::Welcome(w) => w,
            other => {
                return Err(AgentError::Refused {
                    code: CloseCode::ProtocolError,
                    reason: format!("expected welcome, got {:?}", other.kind()),
                });
            }
        };
    apply_config(identity, store, welcome.config);
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
    let mut sampler = Sampler::new();
    let mut heartbeat = interval(identity.config.heartbeat_interval_s);
    let mut metrics = interval(identity.config.metrics_interval_s);
    let ended = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let datagram = outbound.seal_datagram(Message::Heartbeat(sampler.heartbeat()), now_ms())?;
                if let Err(err) = conn.send_datagram(datagram.into()) {
                    break Ended::Lost(err.to_string());
                }
            }
            _ = metrics.tick() => {
                let frame = outbound.seal(Message::Metrics(sampler.metrics(now_ms())), now_ms());
                if let Err(err) = send_on_uni(&conn, &frame).await {
                    break Ended::Lost(err.to_string());
                }
            }
            frame = frames.recv() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) => break Ended::Lost(err.to_string()),
                    None => break Ended::Lost("control stream closed".into()),
                };
                match inbound.accept(Envelope::parse(frame)?, &SERVER_SENDER, &identity.server_key)?.into_message() {
                    Message::ConfigUpdate(cfg) => {
                        apply_config(identity, store, cfg);
                        heartbeat = interval(identity.config.heartbeat_interval_s);
                        metrics = interval(identity.config.metrics_interval_s);
                    }
                    Message::Close(reason) => break Ended::Lost(format!("{}: {}", reason.code, reason.message)),
                    Message::Ack { .. } => {}
                    other => warn!(kind = ?other.kind(), "ignoring unexpected server message"),
                }
            }
            _ = shutdown.changed() => {
                let bye = outbound.seal(Message::Close(CloseReason { code: CloseCode::Normal, message: "agent stopping".into() }), now_ms());
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

/// Stops the frame reader (and its connection handle) however the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send_on_uni(conn: &Connection, frame: &[u8]) -> Result<(), AgentError> {
    let mut stream = conn.open_uni().await.map_err(connection_error)?;
    write_frame(&mut stream, frame).await?;
    stream.finish().map_err(|e| AgentError::Lost(e.to_string()))
}

fn apply_config(identity: &mut AgentIdentity, store: &IdentityStore, config: AgentConfig) {
    let config = config.clamped();
    if identity.config != config {
        identity.config = config;
        if let Err(err) = store.save(identity) {
            warn!(%err, "could not persist config");
        }
    }
}

fn interval(seconds: u32) -> tokio::time::Interval {
    let period = Duration::from_secs(u64::from(seconds.max(1)));
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}
