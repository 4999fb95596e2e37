//! Certificates for tests of TLS clients: a throw-away certificate authority (rcgen, ring) that
//! issues server certificates for the names a test chooses, so a test can make a client trust
//! exactly this CA, or another one, or present a certificate for the wrong name. And the other
//! way round, for tests of TLS servers: a client configuration that accepts exactly one server
//! certificate, pinned by its SHA-256 as Reap3r's agents pin the node's.
//!
//! ```text
//! let ca = TestCa::new("Test mail CA")?;
//! let cert = ca.issue(&["127.0.0.1"])?;
//! // ... the server presents `cert`; the client is given `ca.pem()` to trust ...
//! ```

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// A certificate authority made for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate (issued by a [`TestCa`]) with its private key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: CertificateDer<'static>,
    key_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("cannot {what}: {e}")
}

impl TestCa {
    /// A new self-signed CA whose subject common name is `name`.
    pub fn new(name: &str) -> Result<TestCa, String> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| failed("make CA parameters", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().map_err(|e| failed("make a CA key", e))?;
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(|e| failed("sign the CA", e))?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM: what a client is told to trust.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<ServerCert, String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params =
            CertificateParams::new(names).map_err(|e| failed("make server parameters", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "reap3r-testkit server");
        let key = KeyPair::generate().map_err(|e| failed("make a server key", e))?;
        let cert = params
            .signed_by(&key, &*self.issuer)
            .map_err(|e| failed("sign the server certificate", e))?;
        Ok(ServerCert {
            cert: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl ServerCert {
    /// The certificate, PEM (a chain file is this followed by the CA's [`TestCa::pem`]).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A rustls server configuration (ring provider) presenting this certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed("choose TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .map_err(|e| failed("load the server certificate", e))?;
        Ok(Arc::new(config))
    }
}

/// Accepts exactly the certificate whose SHA-256 is pinned, whatever its name or issuer.
#[derive(Debug)]
struct Pinned {
    fingerprint: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.fingerprint.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
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

/// A rustls client configuration (ring) that trusts only the server certificate whose SHA-256
/// is `fingerprint_hex`, offering the `alpn` protocols in order.
pub fn pinned_client_config(
    fingerprint_hex: &str,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, String> {
    let fingerprint =
        hex::decode(fingerprint_hex).map_err(|e| failed("read the fingerprint", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed("choose TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
