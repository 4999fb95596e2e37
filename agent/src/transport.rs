//! Pinned QUIC client: TLS 1.3 with the server certificate pinned by SHA-256, ring provider,
//! ALPN `reap3r/1`, large UDP buffers; plus length-prefixed frame I/O on streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, EndpointConfig, RecvStream, SendStream, VarInt};
use reap3r_wire::{ALPN, CloseCode, MAX_FRAME_LEN, SERVER_NAME, decode_frame_len, encode_frame};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::AgentError;

pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Accepts exactly one certificate: the one whose SHA-256 the agent pinned at enrolment.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if digest.as_ref() == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Client configuration pinned to `fingerprint`.
pub fn client_config(
    fingerprint: [u8; 32],
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig, AgentError> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate {
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AgentError::Connect(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| AgentError::Connect(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            VarInt::from_u32(idle_timeout.as_millis().min(u32::MAX as u128) as u32).into(),
        ))
        // Job streams and shell channels: the server opens one bidirectional stream for each.
        .max_concurrent_bidi_streams(VarInt::from_u32(64))
        .max_concurrent_uni_streams(VarInt::from_u32(8))
        .datagram_receive_buffer_size(Some(16 * 1024));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A client endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(server: SocketAddr) -> Result<Endpoint, AgentError> {
    let bind: SocketAddr = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| AgentError::Argument("bind address".into()))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    Ok(Endpoint::new(
        EndpointConfig::default(),
        None,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )?)
}

pub async fn resolve(server: &str) -> Result<SocketAddr, AgentError> {
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| AgentError::Connect(format!("{server}: {e}")))?
        .next()
        .ok_or_else(|| AgentError::Connect(format!("{server}: no address")))
}

/// Connects and accepts the control stream the server opens.
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<(Connection, SendStream, RecvStream), AgentError> {
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| AgentError::Connect(e.to_string()))?;
    let conn = connecting.await.map_err(connection_error)?;
    let (send, recv) = conn.accept_bi().await.map_err(connection_error)?;
    Ok((conn, send, recv))
}

/// Turns a QUIC connection error into the reason the agent reports, keeping the server's
/// close code when there is one.
pub fn connection_error(err: quinn::ConnectionError) -> AgentError {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = u16::try_from(close.error_code.into_inner())
                .ok()
                .and_then(CloseCode::from_u16)
                .unwrap_or(CloseCode::ProtocolError);
            AgentError::Refused {
                code,
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            AgentError::ConnectionRefused
        }
        quinn::ConnectionError::TransportError(e) if e.to_string().contains("certificate") => {
            AgentError::Pin("certificate")
        }
        other => {
            let text = other.to_string();
            if text.contains("certificate") || text.contains("ApplicationVerificationFailure") {
                AgentError::Pin("certificate")
            } else {
                AgentError::Lost(text)
            }
        }
    }
}

/// Reads one length-prefixed frame; the length is checked before allocating.
pub async fn read_frame(recv: &mut RecvStream) -> Result<Vec<u8>, AgentError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| AgentError::Lost(e.to_string()))?;
    let len = decode_frame_len(prefix, MAX_FRAME_LEN)?;
    let mut frame = vec![0u8; len];
    recv.read_exact(&mut frame)
        .await
        .map_err(|e| AgentError::Lost(e.to_string()))?;
    Ok(frame)
}

pub async fn write_frame(send: &mut SendStream, envelope: &[u8]) -> Result<(), AgentError> {
    send.write_all(&encode_frame(envelope))
        .await
        .map_err(|e| AgentError::Lost(e.to_string()))
}
