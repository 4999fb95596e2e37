//! The email channel: SMTP through lettre, STARTTLS or implicit TLS (rustls, ring), optional
//! AUTH, a multipart/alternative message with plain-text and HTML parts. The server is
//! connected to at an address resolved and checked here (SSRF), while TLS verifies the
//! certificate and the host name, always: against the public (webpki) roots, or, when the
//! integration has a `ca_pem`, against those CAs only (a self-hosted server with a private CA).
//! Plain SMTP is only for a loopback server with the allow-loopback setting (local tests).

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reap3r_store::Uuid;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::render::render_email;
use super::{ATTEMPT_TIMEOUT, Channel, Channels, SendReport, clip};
use crate::notify::NotificationMessage;

/// Longest `ca_pem`, in bytes (the API schema says the same number).
pub const MAX_CA_PEM_LEN: usize = 65_536;
/// Most certificates in a `ca_pem`.
pub const MAX_CA_CERTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required; port 587 usually).
    Starttls,
    /// TLS from the first byte (port 465 usually).
    Tls,
    /// No encryption: refused unless the server is loopback and the config allows loopback.
    Plain,
}

impl SmtpSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::Plain => "plain",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// PEM CA certificates to verify the server with instead of the public roots (a
    /// self-hosted server with a private CA). Not a secret: certificates are public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// The certificates of a `ca_pem`, each checked to be usable as a trust anchor: 1 to
/// [`MAX_CA_CERTS`] `CERTIFICATE` blocks, at most [`MAX_CA_PEM_LEN`] bytes in all.
pub(crate) fn ca_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if pem.len() > MAX_CA_PEM_LEN {
        return Err(format!("longer than {MAX_CA_PEM_LEN} bytes"));
    }
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE block".into());
    }
    if certs.len() > MAX_CA_CERTS {
        return Err(format!("holds more than {MAX_CA_CERTS} certificates"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("certificate {} is not usable as a CA: {e}", i + 1))?;
    }
    Ok(certs)
}

/// TLS that verifies `config.host` against the public roots, or the integration's CAs only.
fn tls_parameters(config: &EmailConfig) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(config.host.clone());
    if let Some(pem) = config.ca_pem.as_deref() {
        builder = builder.certificate_store(CertificateStore::None);
        for cert in ca_certificates(pem).map_err(|e| format!("ca_pem {e}"))? {
            let cert = Certificate::from_der(cert.to_vec())
                .map_err(|e| format!("ca_pem is not usable: {e}"))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS setup failed: {e}"))
}

/// Parses an address (`a@example.com` or `Name <a@example.com>`).
pub(crate) fn mailbox(field: &str, text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>()
        .map_err(|e| format!("{field} {text:?} is not an email address: {e}"))
}

fn build(config: &EmailConfig, message: &NotificationMessage, id: Uuid) -> Result<Message, String> {
    let (subject, text, html) = render_email(message, id);
    let mut builder = Message::builder()
        .from(mailbox("from", &config.from)?)
        .subject(subject)
        .message_id(Some(format!("<{id}@reap3r>")))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Reap3r-Notification-Id"),
            id.to_string(),
        ));
    for to in &config.to {
        builder = builder.to(mailbox("to", to)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| format!("cannot build the email: {e}"))
}

pub(super) async fn send(
    channels: &Channels,
    channel: &Channel,
    message: &NotificationMessage,
    id: Uuid,
) -> SendReport {
    let settings = channels.settings();
    let Some(config) = channel.config.email.as_ref() else {
        return SendReport::refused("email integration has no SMTP settings");
    };
    let email = match build(config, message, id) {
        Ok(m) => m,
        Err(e) => return SendReport::refused(e),
    };
    let addrs = match channels.resolve(&config.host, config.port).await {
        Ok(a) => a,
        Err(e) => return SendReport::refused(e),
    };
    let Some(addr) = addrs.first() else {
        return SendReport::refused("SMTP host has no address");
    };
    let tls = match config.security {
        SmtpSecurity::Plain if settings.allow_loopback && addr.ip().is_loopback() => Tls::None,
        SmtpSecurity::Plain => {
            return SendReport::refused(
                "plain SMTP is only allowed to a loopback server with the allow-loopback setting",
            );
        }
        security => {
            let params = match tls_parameters(config) {
                Ok(p) => p,
                Err(e) => return SendReport::refused(e),
            };
            if security == SmtpSecurity::Tls {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        }
    };
    // Connect to the checked address; TLS still verifies `host`.
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
            .port(addr.port())
            .tls(tls)
            .timeout(Some(ATTEMPT_TIMEOUT));
    if let Some(user) = config.username.as_deref() {
        let password = channel.secrets.smtp_password.clone().unwrap_or_default();
        transport = transport.credentials(Credentials::new(user.to_owned(), password));
    }
    match transport.build().send(email).await {
        Ok(response) => {
            let lines: Vec<&str> = response.message().collect();
            SendReport {
                delivered: response.is_positive(),
                answer: clip(format!("{} {}", response.code(), lines.join(" "))),
                retry_after_ms: None,
            }
        }
        Err(e) => SendReport::refused(format!("SMTP: {}", describe(&e))),
    }
}

/// A lettre error with its causes (a TLS failure says why the certificate was refused).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let cause = s.to_string();
        // lettre's Display already ends with its direct cause.
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    // lettre wraps a connection error in another ("Connection error: Connection error: …").
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use reap3r_testkit::TestCa;

    use super::*;

    #[test]
    fn ca_pem_takes_1_to_16_usable_certificates() {
        let cas: Vec<String> = (0..=MAX_CA_CERTS)
            .map(|i| TestCa::new(&format!("CA {i}")).unwrap().pem())
            .collect();
        assert_eq!(ca_certificates(&cas[0]).unwrap().len(), 1);
        let bundle = cas[..MAX_CA_CERTS].concat();
        assert_eq!(ca_certificates(&bundle).unwrap().len(), MAX_CA_CERTS);
        let refused: &[(&str, String)] = &[
            ("holds more than", cas.concat()),
            ("holds no PEM CERTIFICATE", String::new()),
            ("holds no PEM CERTIFICATE", "just text".into()),
            (
                "holds no PEM CERTIFICATE",
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
                    .into(),
            ),
            (
                "is not valid PEM",
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
            ),
            (
                "certificate 2 is not usable as a CA",
                format!(
                    "{}-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
                    cas[0]
                ),
            ),
            ("longer than", "a".repeat(MAX_CA_PEM_LEN + 1)),
        ];
        for (why, pem) in refused {
            let got = ca_certificates(pem);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(why)),
                "{why}: {got:?}"
            );
        }
    }
}
