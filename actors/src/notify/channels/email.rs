//! The email channel: SMTP through lettre, STARTTLS or implicit TLS (rustls, ring), optional
//! AUTH, a multipart/alternative message with plain-text and HTML parts. The server is
//! connected to at an address resolved and checked here (SSRF), while TLS verifies the host
//! name. Plain SMTP is only for a loopback server with the allow-loopback setting (local tests).

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reap3r_store::Uuid;
use serde::{Deserialize, Serialize};

use super::render::render_email;
use super::{ATTEMPT_TIMEOUT, Channel, NotifySettings, SendReport, clip};
use crate::notify::NotificationMessage;
use crate::notify::ssrf::resolve_checked;

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
    channel: &Channel,
    message: &NotificationMessage,
    id: Uuid,
    settings: NotifySettings,
) -> SendReport {
    let Some(config) = channel.config.email.as_ref() else {
        return SendReport::refused("email integration has no SMTP settings");
    };
    let email = match build(config, message, id) {
        Ok(m) => m,
        Err(e) => return SendReport::refused(e),
    };
    let addrs = match resolve_checked(&config.host, config.port, settings.allow_loopback).await {
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
            let params = match TlsParameters::new(config.host.clone()) {
                Ok(p) => p,
                Err(e) => return SendReport::refused(format!("TLS setup failed: {e}")),
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
            }
        }
        Err(e) => SendReport::refused(format!("SMTP: {e}")),
    }
}
