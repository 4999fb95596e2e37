//! The QUIC gateway: accepts agent connections, frames bytes, and hands them to session actors.
//! It holds no protocol logic; sessions decide everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, EndpointConfig, Incoming, RecvStream, SendStream, VarInt};
use quinn_proto::HashedConnectionIdGenerator;
use ractor::ActorRef;
use reap3r_actors::{
    ActorSlot, AgentLink, ChannelPipe, DrainSignal, FleetStats, LinkError, SessionMsg,
    SupervisorMsg,
};
use reap3r_wire::{ALPN, CloseCode, MAX_FRAME_LEN, decode_frame_len, encode_frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, warn};

use crate::identity::ServerIdentity;

/// UDP socket buffers; QUIC drops packets on busy loopback with the 200 KB defaults.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Frames queued for one agent before the session is considered stuck.
const SEND_QUEUE: usize = 256;
/// Uni streams an agent may have open at once (metrics batches).
const MAX_UNI_STREAMS: u32 = 8;
/// Frames accepted on one uni stream.
const MAX_FRAMES_PER_UNI: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("QUIC socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Builds the QUIC endpoint: TLS 1.3 only, ring provider set explicitly, ALPN `reap3r/1`.
pub fn bind_endpoint(
    addr: SocketAddr,
    identity: &ServerIdentity,
    idle_timeout: Duration,
) -> Result<Endpoint, GatewayError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.private_key_der())
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| GatewayError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            VarInt::from_u32(idle_timeout.as_millis().min(u32::MAX as u128) as u32).into(),
        ))
        .max_concurrent_bidi_streams(VarInt::from_u32(16))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .datagram_receive_buffer_size(Some(64 * 1024))
        .stream_receive_window(VarInt::from_u32(MAX_FRAME_LEN as u32 * 2))
        .receive_window(VarInt::from_u32(MAX_FRAME_LEN as u32 * 4));
    server.transport_config(Arc::new(transport));
    let socket = udp_socket(addr).map_err(|source| GatewayError::Bind { addr, source })?;
    Endpoint::new(
        endpoint_config(&identity.quic_secret),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| GatewayError::Bind { addr, source })
}

/// The endpoint's keys, derived from the secret kept in the data dir. A restarted process must
/// recognise the connections of the process before it and reset them at their first packet
/// (RFC 9000 §10.3), so that their agents reconnect at once instead of waiting out their idle
/// timeout (3 heartbeat intervals + 10 s): the connection ids carry a keyed check (without the
/// same key, quinn drops their packets without an answer) and each reset token is an HMAC of
/// the connection id (without the same key, the agent ignores the reset).
fn endpoint_config(secret: &[u8; 32]) -> EndpointConfig {
    let master = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let derive = |label: &[u8]| ring::hmac::sign(&master, label);
    let reset_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        derive(b"reap3r quic stateless reset v1").as_ref(),
    );
    let cid_tag = derive(b"reap3r quic connection id v1");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid_tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
    config
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: the kernel caps these at net.core.*mem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Job streams one connection may have open at once (the agent's stream limit applies too).
const MAX_JOB_STREAMS: usize = 256;
/// Frames accepted from the agent on one job stream (ack, started, output chunks, result).
const MAX_FRAMES_PER_JOB: usize = 1024;

/// Channel streams (remote shells) one connection may have open at once.
const MAX_CHANNEL_STREAMS: usize = 32;
/// Frames queued each way on one channel stream.
const CHANNEL_QUEUE: usize = 64;
/// Largest frame accepted on a channel: a shell's output chunk (16 KiB) and the envelope
/// around it, with room to spare; far below `MAX_FRAME_LEN`, so a channel's queue holds at
/// most 4 MiB.
const MAX_CHANNEL_FRAME: usize = 64 * 1024;

/// A session's view of one QUIC connection.
struct QuicLink {
    conn: Connection,
    tx: mpsc::Sender<Vec<u8>>,
    /// Set once the session exists; job streams feed their frames to it.
    session: std::sync::OnceLock<ActorRef<SessionMsg>>,
    job_streams: Arc<Semaphore>,
    channel_streams: Arc<Semaphore>,
    stats: Arc<FleetStats>,
    /// The admission slot, held from the first packet until the session is live or refused, so
    /// the hello's verification and database work count against the handshake limit too.
    admission: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl AgentLink for QuicLink {
    fn send_frame(&self, envelope: Vec<u8>) -> Result<(), LinkError> {
        self.tx.try_send(envelope).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LinkError::Full,
            mpsc::error::TrySendError::Closed(_) => LinkError::Closed,
        })
    }

    fn close(&self, code: CloseCode, reason: &str) {
        self.conn
            .close(VarInt::from_u32(u32::from(code as u16)), reason.as_bytes());
    }

    fn remote(&self) -> String {
        self.conn.remote_address().to_string()
    }

    fn handshake_done(&self) {
        if let Ok(mut slot) = self.admission.lock() {
            slot.take();
        }
    }

    fn open_channel(&self, opener: Vec<u8>) -> Result<ChannelPipe, LinkError> {
        self.channel(opener)
    }

    fn open_job_stream(&self, envelope: Vec<u8>) -> Result<(), LinkError> {
        let session = self.session.get().cloned().ok_or(LinkError::Closed)?;
        let permit = self
            .job_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| LinkError::Full)?;
        let conn = self.conn.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(streams) => streams,
                Err(err) => return debug!(%err, "could not open a job stream"),
            };
            if send.write_all(&encode_frame(&envelope)).await.is_err() {
                return;
            }
            let _ = send.finish();
            pump_stream(&mut recv, &session, MAX_FRAMES_PER_JOB, &stats, &conn).await;
        });
        Ok(())
    }
}

impl QuicLink {
    fn channel(&self, opener: Vec<u8>) -> Result<ChannelPipe, LinkError> {
        let permit = self
            .channel_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| LinkError::Full)?;
        let (to_agent, mut outgoing) = mpsc::channel::<Vec<u8>>(CHANNEL_QUEUE);
        let (incoming, from_agent) = mpsc::channel::<Vec<u8>>(CHANNEL_QUEUE);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(streams) => streams,
                Err(err) => return debug!(%err, "could not open a channel stream"),
            };
            if send.write_all(&encode_frame(&opener)).await.is_err() {
                return;
            }
            // The channel's frames are verified by its owner; here they are only framed, with
            // the length checked before anything is allocated.
            let reader = async move {
                loop {
                    let mut prefix = [0u8; 4];
                    if recv.read_exact(&mut prefix).await.is_err() {
                        return;
                    }
                    let Ok(len) = decode_frame_len(prefix, MAX_CHANNEL_FRAME) else {
                        let _ = recv.stop(VarInt::from_u32(CloseCode::FrameTooLarge as u32));
                        return;
                    };
                    let mut frame = vec![0u8; len];
                    if recv.read_exact(&mut frame).await.is_err()
                        || incoming.send(frame).await.is_err()
                    {
                        return;
                    }
                }
            };
            let writer = async move {
                while let Some(frame) = outgoing.recv().await {
                    if send.write_all(&encode_frame(&frame)).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish();
            };
            // The stream lives until both directions are done: an agent's exit comes after the
            // server's last keystroke, and the server's close after the agent's last output.
            tokio::join!(reader, writer);
        });
        Ok(ChannelPipe {
            to_agent,
            from_agent,
        })
    }
}

/// Connections waiting for admission, at most.
const ACCEPT_QUEUE: usize = 16_384;
/// A connection that waited longer than this for admission is refused instead of started: its
/// agent (15 s connect deadline) would likely give up before the handshake and hello finished,
/// and a half-done handshake with a departed agent holds an admission slot for nothing.
const MAX_ADMISSION_WAIT: Duration = Duration::from_secs(5);

/// Accepts connections until the endpoint is closed.
///
/// Admission control: at most `max_handshakes` connections are between their first packet and
/// a live (or refused) session — the hello's verification and database work included. The rest
/// wait in order in a bounded queue. One that waited more than [`MAX_ADMISSION_WAIT`], or finds
/// the queue full, is refused before any TLS work; the agent retries shortly.
pub async fn accept_loop(
    endpoint: Endpoint,
    supervisor: ActorSlot<SupervisorMsg>,
    stats: Arc<FleetStats>,
    max_handshakes: usize,
    mut drain: DrainSignal,
) {
    let (queue, mut waiting) = mpsc::channel::<(Instant, Incoming)>(ACCEPT_QUEUE);
    let intake_stats = stats.clone();
    // Ends with this loop, also when the loop's task is aborted at shutdown.
    let _intake = AbortOnDrop(tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            if let Err(mpsc::error::TrySendError::Full((_, incoming))) =
                queue.try_send((Instant::now(), incoming))
            {
                FleetStats::bump(&intake_stats.handshakes_shed);
                incoming.refuse();
            }
        }
    }));
    let admission = Arc::new(Semaphore::new(max_handshakes));
    // Ends at the drain signal: a connection admitted now would be kicked at once, or come
    // online after this node released its leases.
    loop {
        let next = async {
            let permit = admission.clone().acquire_owned().await.ok()?;
            let (queued_at, incoming) = waiting.recv().await?;
            Some((permit, queued_at, incoming))
        };
        let admitted = tokio::select! {
            next = next => next,
            () = drain.started() => None,
        };
        let Some((permit, queued_at, incoming)) = admitted else {
            break;
        };
        if queued_at.elapsed() > MAX_ADMISSION_WAIT {
            FleetStats::bump(&stats.handshakes_shed);
            incoming.refuse();
            continue;
        }
        let supervisor = supervisor.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            // Boxed: the handshake and session start run once, and inline they would size the
            // task that lives as long as the connection.
            let started = Box::pin(admit(incoming, &supervisor, &stats, permit)).await;
            if let Some((conn, session, recv)) = started {
                serve_connection(conn, session, recv, stats).await;
            }
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes the QUIC handshake and starts the connection's session.
async fn admit(
    incoming: Incoming,
    supervisor: &ActorSlot<SupervisorMsg>,
    stats: &Arc<FleetStats>,
    permit: OwnedSemaphorePermit,
) -> Option<(Connection, ActorRef<SessionMsg>, RecvStream)> {
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            debug!(%err, "handshake failed");
            return None;
        }
        Err(_) => {
            debug!("handshake timed out");
            return None;
        }
    };
    FleetStats::bump(&stats.connections_accepted);
    let (session, recv) = start_session(&conn, supervisor, stats, permit).await?;
    Some((conn, session, recv))
}

async fn start_session(
    conn: &Connection,
    supervisor: &ActorSlot<SupervisorMsg>,
    stats: &Arc<FleetStats>,
    permit: OwnedSemaphorePermit,
) -> Option<(ActorRef<SessionMsg>, RecvStream)> {
    let (send, recv) = match conn.open_bi().await {
        Ok(streams) => streams,
        Err(err) => {
            debug!(%err, "could not open control stream");
            return None;
        }
    };
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    tokio::spawn(write_frames(send, rx));
    let quic_link = Arc::new(QuicLink {
        conn: conn.clone(),
        tx,
        session: std::sync::OnceLock::new(),
        job_streams: Arc::new(Semaphore::new(MAX_JOB_STREAMS)),
        channel_streams: Arc::new(Semaphore::new(MAX_CHANNEL_STREAMS)),
        stats: stats.clone(),
        admission: std::sync::Mutex::new(Some(permit)),
    });
    let link: Arc<dyn AgentLink> = quic_link.clone();
    let Some(supervisor) = supervisor.get() else {
        link.close(
            CloseCode::Internal,
            "server restarting a subsystem; reconnect",
        );
        return None;
    };
    match supervisor
        .call(|reply| SupervisorMsg::Spawn(link.clone(), reply), None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(Ok(session))) => {
            let _ = quic_link.session.set(session.clone());
            Some((session, recv))
        }
        other => {
            warn!(?other, "could not start a session");
            link.close(CloseCode::Internal, "could not start session");
            None
        }
    }
}

async fn write_frames(mut send: SendStream, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if send.write_all(&encode_frame(&frame)).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Pumps the control stream, datagrams and metric streams of one connection into its session.
async fn serve_connection(
    conn: Connection,
    session: ActorRef<SessionMsg>,
    mut control: RecvStream,
    stats: Arc<FleetStats>,
) {
    let reason = tokio::select! {
        r = pump_stream(&mut control, &session, usize::MAX, &stats, &conn) => r,
        r = pump_datagrams(&conn, &session) => r,
        r = pump_uni_streams(&conn, &session, &stats) => r,
    };
    if session.cast(SessionMsg::LinkClosed(reason)).is_err() {
        // The session is gone without closing its link (its supervisor was restarted): close
        // the connection here so the agent reconnects to a fresh session.
        conn.close(
            VarInt::from_u32(CloseCode::Internal as u32),
            b"session ended; reconnect",
        );
    }
}

async fn pump_stream(
    recv: &mut RecvStream,
    session: &ActorRef<SessionMsg>,
    max_frames: usize,
    stats: &FleetStats,
    conn: &Connection,
) -> String {
    for _ in 0..max_frames {
        let mut prefix = [0u8; 4];
        if let Err(err) = recv.read_exact(&mut prefix).await {
            return format!("stream ended: {err}");
        }
        let len = match decode_frame_len(prefix, MAX_FRAME_LEN) {
            Ok(len) => len,
            Err(err) => {
                // Refused before allocating: the announced length never becomes a buffer.
                let code = match err {
                    reap3r_wire::WireError::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
                    _ => CloseCode::ProtocolError,
                };
                stats.count_close(code);
                warn!(remote = %conn.remote_address(), %err, "refusing frame");
                conn.close(VarInt::from_u32(code as u32), err.to_string().as_bytes());
                return err.to_string();
            }
        };
        let mut frame = vec![0u8; len];
        if let Err(err) = recv.read_exact(&mut frame).await {
            return format!("stream ended mid-frame: {err}");
        }
        match session
            .call(|reply| SessionMsg::Frame(frame, reply), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(true)) => {}
            _ => return "session closed".into(),
        }
    }
    "stream frame limit reached".into()
}

async fn pump_datagrams(conn: &Connection, session: &ActorRef<SessionMsg>) -> String {
    loop {
        match conn.read_datagram().await {
            Ok(bytes) => match session
                .call(|reply| SessionMsg::Datagram(bytes.to_vec(), reply), None)
                .await
            {
                Ok(ractor::rpc::CallResult::Success(true)) => {}
                _ => return "session closed".into(),
            },
            Err(err) => return err.to_string(),
        }
    }
}

async fn pump_uni_streams(
    conn: &Connection,
    session: &ActorRef<SessionMsg>,
    stats: &Arc<FleetStats>,
) -> String {
    loop {
        match conn.accept_uni().await {
            Ok(mut recv) => {
                let session = session.clone();
                let stats = stats.clone();
                let conn = conn.clone();
                tokio::spawn(async move {
                    pump_stream(&mut recv, &session, MAX_FRAMES_PER_UNI, &stats, &conn).await;
                });
            }
            Err(err) => return err.to_string(),
        }
    }
}
