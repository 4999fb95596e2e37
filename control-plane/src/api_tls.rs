//! TLS for the HTTP API, when configured: the node's own certificate (the one the QUIC gateway
//! presents and agents pin) or a PEM chain and key from files; a rustls server configuration with
//! the ring provider set explicitly (never aws-lc-rs: two providers in one process panic), TLS
//! 1.2 and 1.3, ALPN `h2` then `http/1.1`; and the poem acceptor that wraps the TCP listener.
//!
//! poem's own `RustlsListener` is not used: its `tokio-rustls` dependency brings aws-lc-rs with
//! its default features. The acceptor here hands poem a stream whose handshake runs on the
//! connection's own task at its first read or write (a slow client never holds up the accept
//! loop) and is given up after [`HANDSHAKE_TIMEOUT`]. poem's server speaks HTTP/2 on a stream
//! whose first bytes are the HTTP/2 preface, which is what a client that negotiated `h2` sends.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

use crate::identity::ServerIdentity;

/// ALPN protocols offered, in the server's order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The longest a client may take from connecting to finishing the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API serves over TLS: the rustls configuration and the certificate it presents
/// (whose SHA-256 a client may pin).
#[derive(Debug, Clone)]
pub struct ApiTlsConfig {
    pub server: Arc<ServerConfig>,
    pub certificate: CertificateDer<'static>,
}

impl ApiTlsConfig {
    /// SHA-256 of the presented certificate, hex (as `ServerIdentity::fingerprint`).
    pub fn fingerprint(&self) -> String {
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            &self.certificate,
        ))
    }
}

/// A rustls server configuration (ring) presenting `chain` with `key`; fails when the key does
/// not match the certificate or either cannot be used.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ApiTlsConfig, rustls::Error> {
    let certificate = chain
        .first()
        .cloned()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(ApiTlsConfig {
        server: Arc::new(config),
        certificate,
    })
}

/// The node's own certificate and key, as the QUIC gateway presents them.
pub fn node_config(identity: &ServerIdentity) -> Result<ApiTlsConfig, String> {
    server_config(vec![identity.cert.clone()], identity.private_key_der())
        .map_err(|e| format!("the node's certificate cannot serve the API: {e}"))
}

/// A PEM certificate chain (end entity first) and a PEM private key (PKCS#8, PKCS#1 or SEC1)
/// from files, checked: both readable, parseable, and the key the certificate's. Errors name
/// the setting and the file.
pub fn files_config(cert: &Path, key: &Path) -> Result<ApiTlsConfig, Vec<String>> {
    let mut errors = Vec::new();
    let chain =
        read(cert, "api_tls_cert", &mut errors).and_then(
            |pem| match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
                Ok(chain) if chain.is_empty() => {
                    errors.push(format!(
                        "api_tls_cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                        cert.display()
                    ));
                    None
                }
                Ok(chain) => Some(chain),
                Err(e) => {
                    errors.push(format!(
                        "api_tls_cert {}: not a PEM certificate chain: {e}",
                        cert.display()
                    ));
                    None
                }
            },
        );
    let private = read(key, "api_tls_key", &mut errors).and_then(|pem| {
        match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push(format!(
                    "api_tls_key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}",
                    key.display()
                ));
                None
            }
        }
    });
    let (Some(chain), Some(private)) = (chain, private) else {
        return Err(errors);
    };
    server_config(chain, private).map_err(|e| {
        vec![match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "api_tls_key {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            other => format!(
                "api_tls_cert {} with api_tls_key {}: {other}",
                cert.display(),
                key.display()
            ),
        }]
    })
}

fn read(path: &Path, setting: &str, errors: &mut Vec<String>) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            errors.push(format!("{setting} {}: cannot read it: {e}", path.display()));
            None
        }
    }
}

/// A poem acceptor that serves TLS over another acceptor's connections (the TCP listener's).
pub struct TlsAcceptor<A> {
    inner: A,
    tls: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl<A> TlsAcceptor<A> {
    /// Handshakes time out after [`HANDSHAKE_TIMEOUT`].
    pub fn new(inner: A, config: Arc<ServerConfig>) -> Self {
        Self {
            inner,
            tls: tokio_rustls::TlsAcceptor::from(config),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Another handshake timeout (tests).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

impl<A: Acceptor> Acceptor for TlsAcceptor<A> {
    type Io = TlsIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, local, remote, _) = self.inner.accept().await?;
        let handshake = self.tls.accept(stream);
        // From the accept, not from the first read.
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let handshake = Box::pin(async move {
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        });
        Ok((
            TlsIo {
                state: State::Handshaking(handshake),
            },
            local,
            remote,
            Scheme::HTTPS,
        ))
    }
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

/// A TLS stream whose handshake completes at its first read or write.
pub struct TlsIo<S> {
    state: State<S>,
}

enum State<S> {
    Handshaking(Handshake<S>),
    Ready(Box<TlsStream<S>>),
    Failed,
}

impl<S> TlsIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Drives the handshake; ready once the stream is.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<S>>> {
        if let State::Handshaking(handshake) = &mut self.state {
            match handshake.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(stream)) => self.state = State::Ready(Box::new(stream)),
                Poll::Ready(Err(err)) => {
                    self.state = State::Failed;
                    return Poll::Ready(Err(err));
                }
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS handshake failed",
            ))),
        }
    }
}

impl<S> AsyncRead for TlsIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_read(cx, buf),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> AsyncWrite for TlsIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write(cx, buf),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Ready(stream) => stream.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_flush(cx),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            // Nothing was said over TLS yet: closing needs no handshake.
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn generated(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pem_chain_and_key_serve_h2_and_http11() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated("api.example");
        let config = files_config(
            &write(dir.path(), "c.pem", &cert),
            &write(dir.path(), "k.pem", &key),
        )
        .unwrap();
        assert_eq!(
            config.server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    /// A client that connects and says nothing is dropped after the handshake timeout, on the
    /// connection's own stream; the acceptor meanwhile accepts the next connection.
    #[tokio::test]
    async fn a_silent_client_times_out_without_holding_up_accepts() {
        use poem::listener::{Listener, TcpListener};
        use tokio::io::AsyncReadExt;

        let (cert, key) = generated("api.example");
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let tls = server_config(chain, key).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = *tcp.local_addr()[0].as_socket_addr().unwrap();
        let timeout = Duration::from_millis(300);
        let mut acceptor = TlsAcceptor::new(tcp, tls.server).handshake_timeout(timeout);
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut first, ..) = acceptor.accept().await.unwrap();
        let _second_client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_second, _, _, scheme) = acceptor.accept().await.unwrap();
        assert_eq!(scheme, Scheme::HTTPS);
        let started = tokio::time::Instant::now();
        let err = first.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= timeout);
        // Failed for good: later reads fail at once.
        assert!(first.read_u8().await.is_err());
    }

    #[test]
    fn unreadable_unparseable_and_mismatched_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated("api.example");
        let (_, other_key) = generated("other.example");
        let c = write(dir.path(), "c.pem", &cert);
        let k = write(dir.path(), "k.pem", &key);
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");
        let missing = dir.path().join("missing.pem");
        let wrong = write(dir.path(), "wrong.pem", &other_key);
        let errors = |cert: &Path, key: &Path| files_config(cert, key).err().unwrap().join("\n");

        let e = errors(&missing, &k);
        assert!(
            e.contains("api_tls_cert") && e.contains("cannot read"),
            "{e}"
        );
        let e = errors(&c, &missing);
        assert!(
            e.contains("api_tls_key") && e.contains("cannot read"),
            "{e}"
        );
        let e = errors(&junk, &k);
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = errors(&c, &junk);
        assert!(e.contains("no PEM private key"), "{e}");
        // The key where the certificate should be, and the other way round.
        let e = errors(&k, &c);
        assert!(
            e.contains("no PEM certificate") && e.contains("no PEM private key"),
            "{e}"
        );
        let e = errors(&c, &wrong);
        assert!(e.contains("does not match the certificate"), "{e}");
    }
}
