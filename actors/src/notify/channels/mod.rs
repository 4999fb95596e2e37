//! The channels an integration sends through, their settings (stored as JSON) and secrets
//! (write-only), and [`Channels`], which delivers one message to one integration and reports the
//! receiver's answer. Rendering is in `render.rs`, the HTTP kinds in `http.rs`, SMTP in
//! `email.rs`.

mod email;
mod http;
mod render;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reap3r_store::{Integration, SealedColumn, Uuid};
use serde::{Deserialize, Serialize};

pub(crate) use email::ca_certificates;
pub(crate) use email::mailbox;
pub use email::{EmailConfig, MAX_CA_CERTS, MAX_CA_PEM_LEN, SmtpSecurity};
pub use http::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
pub use render::{render_chat, render_email, render_webhook};

use super::NotificationMessage;
use super::ssrf::{Lookup, SystemLookup, resolve_checked};
use crate::vault::Vault;

/// Most recipients of an email integration.
pub const MAX_RECIPIENTS: usize = 50;
/// Longest secret (SMTP password, HMAC secret), in bytes.
pub const MAX_SECRET_LEN: usize = 1024;
/// Shortest webhook HMAC secret, in bytes.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;
/// How long one attempt may take (connect, TLS, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of a receiver's answer is kept, in bytes.
pub const MAX_ANSWER_LEN: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationKind {
    Email,
    Webhook,
    Slack,
    Teams,
    Discord,
}

impl IntegrationKind {
    pub const ALL: [IntegrationKind; 5] = [
        IntegrationKind::Email,
        IntegrationKind::Webhook,
        IntegrationKind::Slack,
        IntegrationKind::Teams,
        IntegrationKind::Discord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::Email => "email",
            IntegrationKind::Webhook => "webhook",
            IntegrationKind::Slack => "slack",
            IntegrationKind::Teams => "teams",
            IntegrationKind::Discord => "discord",
        }
    }
}

impl FromStr for IntegrationKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        IntegrationKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown integration kind {s:?}"))
    }
}

/// Non-secret settings, stored as the integration's `config` JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Email only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
    /// The generic webhook's URL (chat hook URLs are secrets instead: they are the credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Secrets, stored as the integration's `secrets` JSON and never shown by the API.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// The Slack, Teams or Discord incoming-webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_url: Option<String>,
}

impl std::fmt::Debug for ChannelSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSecrets")
            .field("smtp_password", &self.smtp_password.is_some())
            .field("webhook_secret", &self.webhook_secret.is_some())
            .field("hook_url", &self.hook_url.is_some())
            .finish()
    }
}

/// An integration with its settings and secrets decoded.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub kind: IntegrationKind,
    pub config: ChannelConfig,
    pub secrets: ChannelSecrets,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl Channel {
    /// Decodes a stored integration, opening its sealed secrets.
    pub fn decode(row: &Integration, vault: &Vault) -> Result<Channel, String> {
        let secrets = vault
            .open_column(
                SealedColumn::IntegrationSecrets,
                Some(row.org_id),
                row.id,
                &row.secrets,
            )
            .map_err(|e| format!("integration secrets cannot be opened: {e}"))?;
        Ok(Channel {
            id: row.id,
            org_id: row.org_id,
            name: row.name.clone(),
            kind: row.kind.parse()?,
            config: serde_json::from_str(&row.config)
                .map_err(|e| format!("integration settings are unreadable: {e}"))?,
            secrets: serde_json::from_slice(&secrets)
                .map_err(|e| format!("integration secrets are unreadable: {e}"))?,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// What the server config says about receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifySettings {
    /// Allow loopback, link-local and metadata receivers, and plain (unencrypted) SMTP to a
    /// loopback server: for local tests only.
    pub allow_loopback: bool,
}

/// How a send went: the receiver's answer, and whether it accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    pub delivered: bool,
    /// "HTTP 200 OK", "250 2.0.0 queued", or why nothing was answered.
    pub answer: String,
    /// How long the receiver asked to be left alone (HTTP `Retry-After` in seconds, as a
    /// rate-limiting receiver sends with 429 or 503), in ms.
    pub retry_after_ms: Option<i64>,
}

impl SendReport {
    fn refused(answer: impl Into<String>) -> Self {
        Self {
            delivered: false,
            answer: clip(answer.into()),
            retry_after_ms: None,
        }
    }
}

/// Cuts a receiver's answer to [`MAX_ANSWER_LEN`] at a character boundary.
pub(crate) fn clip(mut s: String) -> String {
    if s.len() > MAX_ANSWER_LEN {
        let mut end = MAX_ANSWER_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Delivers messages: one HTTP client (guarded resolver, no redirects, rustls/ring) shared by
/// every send, and the name lookup every receiver address goes through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Channels {
    http: reqwest::Client,
    settings: NotifySettings,
    lookup: Arc<dyn Lookup>,
}

impl Channels {
    /// Channels that look names up with the system resolver.
    pub fn new(settings: NotifySettings) -> Result<Channels, String> {
        Self::with_lookup(settings, Arc::new(SystemLookup))
    }

    /// Channels that look names up through `lookup` (tests play DNS with a table).
    pub fn with_lookup(
        settings: NotifySettings,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Channels, String> {
        Ok(Channels {
            http: http::client(settings, lookup.clone())?,
            settings,
            lookup,
        })
    }

    pub fn settings(&self) -> NotifySettings {
        self.settings
    }

    /// Resolves a receiver's host once and checks every address (SSRF); connect only to these.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        resolve_checked(
            self.lookup.as_ref(),
            host,
            port,
            self.settings.allow_loopback,
        )
        .await
    }

    /// Sends `message` through `channel` now, as notification `id` (the idempotency id),
    /// within [`ATTEMPT_TIMEOUT`].
    pub async fn send(
        &self,
        channel: &Channel,
        message: &NotificationMessage,
        id: Uuid,
        now_ms: i64,
    ) -> SendReport {
        if !channel.enabled {
            return SendReport::refused("integration is disabled");
        }
        let attempt = async {
            match channel.kind {
                IntegrationKind::Email => email::send(self, channel, message, id).await,
                IntegrationKind::Webhook => {
                    http::send_webhook(&self.http, channel, message, id, now_ms, self.settings)
                        .await
                }
                IntegrationKind::Slack | IntegrationKind::Teams | IntegrationKind::Discord => {
                    http::send_chat(&self.http, channel, message, id, self.settings).await
                }
            }
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(report) => report,
            Err(_) => {
                SendReport::refused(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))
            }
        }
    }
}
