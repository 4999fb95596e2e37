//! The simulated agents' QUIC client, configured like the real agent (`agent/src/transport.rs`):
//! TLS 1.3 only with the ring provider set explicitly, ALPN `reap3r/1`, the server certificate
//! pinned by SHA-256 (the agent's own `client_config` and frame I/O), and endpoints with 4 MiB
//! UDP socket buffers shared by many simulated agents.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use quinn::{Connection, Endpoint, EndpointConfig, RecvStream, SendStream};
use reap3r_wire::CloseCode;

/// UDP socket buffers, as on the real agent and the server.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// What an agent pins at enrolment: the certificate's SHA-256 and the server's Ed25519 key.
#[derive(Debug, Clone)]
pub struct Pins {
    pub fingerprint: [u8; 32],
    pub server_key: reap3r_wire::VerifyingKey,
}

impl Pins {
    pub fn from_hex(fingerprint: &str, server_key: &str) -> Result<Self> {
        let fingerprint: [u8; 32] = hex::decode(fingerprint.trim())?
            .try_into()
            .map_err(|_| anyhow!("fingerprint is not 32 bytes"))?;
        let key: [u8; 32] = hex::decode(server_key.trim())?
            .try_into()
            .map_err(|_| anyhow!("server key is not 32 bytes"))?;
        Ok(Self {
            fingerprint,
            server_key: reap3r_wire::VerifyingKey::from_bytes(&key)
                .map_err(|_| anyhow!("server key is not an Ed25519 key"))?,
        })
    }
}

/// Client configuration pinned to `fingerprint`: the real agent's (`reap3r_agent::transport`).
pub fn client_config(fingerprint: [u8; 32], idle_timeout: Duration) -> Result<quinn::ClientConfig> {
    Ok(reap3r_agent::transport::client_config(
        fingerprint,
        idle_timeout,
    )?)
}

/// A UDP socket on an ephemeral loopback port with 4 MiB buffers (best effort).
pub fn udp_socket(bind: SocketAddr) -> Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A client endpoint shared by many simulated agents (one socket, many connections).
pub fn client_endpoint() -> Result<Endpoint> {
    let socket = udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(Endpoint::new(
        EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// Reads one length-prefixed frame; the length is checked before allocating.
pub async fn read_frame(recv: &mut RecvStream) -> Result<Vec<u8>> {
    Ok(reap3r_agent::transport::read_frame(recv).await?)
}

pub async fn write_frame(send: &mut SendStream, envelope: &[u8]) -> Result<()> {
    Ok(reap3r_agent::transport::write_frame(send, envelope).await?)
}

/// Sends one frame on a fresh unidirectional stream and finishes it.
pub async fn send_on_uni(conn: &Connection, envelope: &[u8]) -> Result<()> {
    let mut stream = conn.open_uni().await?;
    write_frame(&mut stream, envelope).await?;
    stream.finish().context("finishing uni stream")?;
    Ok(())
}

/// A short name for why a connection ended, with the server's close code when it sent one.
/// What [`close_kind`] calls a connection the server's endpoint refused before any TLS.
pub const REFUSED: &str = "refused";

pub fn close_kind(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = u16::try_from(close.error_code.into_inner())
                .ok()
                .and_then(CloseCode::from_u16);
            match code {
                Some(code) => format!("closed:{code}"),
                None => "closed:unknown".into(),
            }
        }
        quinn::ConnectionError::TimedOut => "timed_out".into(),
        quinn::ConnectionError::LocallyClosed => "locally_closed".into(),
        quinn::ConnectionError::Reset => "reset".into(),
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            REFUSED.into()
        }
        quinn::ConnectionError::ConnectionClosed(_) => "transport_closed".into(),
        quinn::ConnectionError::TransportError(_) => "transport_error".into(),
        quinn::ConnectionError::VersionMismatch => "version_mismatch".into(),
        quinn::ConnectionError::CidsExhausted => "cids_exhausted".into(),
    }
}
