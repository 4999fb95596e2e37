//! The integration operations: create, change, delete, list, and test (send a test message now
//! and report the receiver's answer, or queue it in the outbox). Settings are validated here,
//! receivers checked against SSRF (again at every send); secrets are write-only: they go into
//! the store and come back only as "set" flags.

use reap3r_store::{Integration, IntegrationUpdate, NewIntegration, SealedColumn, Uuid};
use serde_json::json;

use super::channels::{
    Channel, ChannelConfig, ChannelSecrets, Channels, EmailConfig, IntegrationKind, MAX_RECIPIENTS,
    MAX_SECRET_LEN, MIN_WEBHOOK_SECRET_LEN, SendReport, SmtpSecurity,
};
use super::channels::{ca_certificates, mailbox};
use super::ssrf::{MAX_HOST_LEN, check_host, check_url};
use super::{NotificationKind, NotificationMessage, outbox};
use crate::access::Caller;
use crate::error::{DomainError, DomainResult, required_text};
use crate::{Domain, audit};

/// Longest integration name, in characters.
pub const MAX_INTEGRATION_NAME_CHARS: usize = 200;
/// Longest SMTP user name or address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 320;

fn target(id: Uuid) -> String {
    format!("alert_integration:{id}")
}

/// SMTP settings as given (email integrations).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailInput {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Option<SmtpSecurity>,
    pub username: Option<String>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    /// PEM CA certificates to verify the server with instead of the public roots; an empty
    /// string goes back to the public roots.
    pub ca_pem: Option<String>,
}

/// Secrets as given: `Some` replaces, an empty string clears.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretsInput {
    pub smtp_password: Option<String>,
    pub webhook_secret: Option<String>,
    pub hook_url: Option<String>,
}

impl std::fmt::Debug for SecretsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsInput(..)")
    }
}

fn merge_secret(old: Option<String>, new: Option<String>) -> Option<String> {
    match new {
        None => old,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s),
    }
}

fn merge(
    kind: IntegrationKind,
    mut config: ChannelConfig,
    mut secrets: ChannelSecrets,
    email: Option<EmailInput>,
    url: Option<String>,
    given: SecretsInput,
) -> DomainResult<(ChannelConfig, ChannelSecrets)> {
    if let Some(input) = email {
        if kind != IntegrationKind::Email {
            return Err(DomainError::invalid(
                "email settings are for email integrations",
            ));
        }
        let old = config.email.take();
        let host = input.host.or_else(|| old.as_ref().map(|o| o.host.clone()));
        let from = input.from.or_else(|| old.as_ref().map(|o| o.from.clone()));
        let (Some(host), Some(from)) = (host, from) else {
            return Err(DomainError::invalid("email settings need host and from"));
        };
        let security = input
            .security
            .or(old.as_ref().map(|o| o.security))
            .unwrap_or(SmtpSecurity::Starttls);
        let port = input
            .port
            .or(old.as_ref().map(|o| o.port))
            .unwrap_or(match security {
                SmtpSecurity::Tls => 465,
                SmtpSecurity::Starttls => 587,
                SmtpSecurity::Plain => 25,
            });
        config.email = Some(EmailConfig {
            host,
            port,
            security,
            username: match input.username {
                Some(u) if u.is_empty() => None,
                Some(u) => Some(u),
                None => old.as_ref().and_then(|o| o.username.clone()),
            },
            from,
            to: input
                .to
                .or_else(|| old.as_ref().map(|o| o.to.clone()))
                .unwrap_or_default(),
            ca_pem: match input.ca_pem {
                Some(p) if p.trim().is_empty() => None,
                Some(p) => Some(p),
                None => old.and_then(|o| o.ca_pem),
            },
        });
    }
    if let Some(url) = url {
        if kind != IntegrationKind::Webhook {
            return Err(DomainError::invalid(
                "url is for webhook integrations (Slack, Teams and Discord take hook_url)",
            ));
        }
        config.url = Some(url);
    }
    secrets.smtp_password = merge_secret(secrets.smtp_password, given.smtp_password);
    secrets.webhook_secret = merge_secret(secrets.webhook_secret, given.webhook_secret);
    secrets.hook_url = merge_secret(secrets.hook_url, given.hook_url);
    Ok((config, secrets))
}

fn email_address(field: &str, text: &str) -> DomainResult<()> {
    if text.chars().count() > MAX_ADDRESS_CHARS {
        return Err(invalid(
            field,
            format!("longer than {MAX_ADDRESS_CHARS} characters"),
        ));
    }
    mailbox(field, text)
        .map(|_| ())
        .map_err(DomainError::invalid)
}

fn invalid(field: &str, why: impl std::fmt::Display) -> DomainError {
    DomainError::invalid(format!("{field}: {why}"))
}

/// Checks a whole channel (after a create or a merged patch), and its receiver's address.
async fn validate(
    kind: IntegrationKind,
    config: &ChannelConfig,
    secrets: &ChannelSecrets,
    channels: &Channels,
) -> DomainResult<()> {
    let allow = channels.settings().allow_loopback;
    for (field, value) in [
        ("smtp_password", &secrets.smtp_password),
        ("webhook_secret", &secrets.webhook_secret),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_SECRET_LEN) {
            return Err(invalid(
                field,
                format!("longer than {MAX_SECRET_LEN} bytes"),
            ));
        }
    }
    // Resolution failures are let through here (the name may not exist yet); a name that
    // resolves to a forbidden address is refused now, and every send checks again.
    let refuse_resolved = |r: Result<Vec<std::net::SocketAddr>, String>| match r {
        Err(e) if e.contains("resolves to") => Err(invalid("receiver", e)),
        _ => Ok(()),
    };
    match kind {
        IntegrationKind::Email => {
            let Some(email) = config.email.as_ref() else {
                return Err(DomainError::invalid(
                    "email integrations need email settings",
                ));
            };
            if email.host.len() > MAX_HOST_LEN {
                return Err(invalid("host", format!("longer than {MAX_HOST_LEN} bytes")));
            }
            check_host(&email.host, allow).map_err(|e| invalid("host", e))?;
            if email.port == 0 {
                return Err(invalid("port", "must be 1 to 65535"));
            }
            if email.security == SmtpSecurity::Plain && !allow {
                return Err(invalid(
                    "security",
                    "plain SMTP is only allowed with the allow-loopback setting (local tests)",
                ));
            }
            if let Some(pem) = email.ca_pem.as_deref() {
                if email.security == SmtpSecurity::Plain {
                    return Err(invalid("ca_pem", "is for starttls or tls, not plain SMTP"));
                }
                ca_certificates(pem).map_err(|e| invalid("ca_pem", e))?;
            }
            if email
                .username
                .as_ref()
                .is_some_and(|u| u.chars().count() > MAX_ADDRESS_CHARS)
            {
                return Err(invalid(
                    "username",
                    format!("longer than {MAX_ADDRESS_CHARS}"),
                ));
            }
            email_address("from", &email.from)?;
            if email.to.is_empty() || email.to.len() > MAX_RECIPIENTS {
                return Err(invalid(
                    "to",
                    format!("give 1 to {MAX_RECIPIENTS} recipients"),
                ));
            }
            for to in &email.to {
                email_address("to", to)?;
            }
            refuse_resolved(channels.resolve(&email.host, email.port).await)
        }
        IntegrationKind::Webhook => {
            let Some(url) = config.url.as_deref() else {
                return Err(DomainError::invalid("webhook integrations need a url"));
            };
            let parsed = check_url(url, allow).map_err(|e| invalid("url", e))?;
            match secrets.webhook_secret.as_deref() {
                Some(s) if s.len() >= MIN_WEBHOOK_SECRET_LEN => {}
                _ => {
                    return Err(invalid(
                        "webhook_secret",
                        format!(
                            "webhooks need a signing secret of at least {MIN_WEBHOOK_SECRET_LEN} bytes"
                        ),
                    ));
                }
            }
            let host = parsed.host_str().unwrap_or_default().to_owned();
            let port = parsed.port_or_known_default().unwrap_or(443);
            refuse_resolved(channels.resolve(&host, port).await)
        }
        IntegrationKind::Slack | IntegrationKind::Teams | IntegrationKind::Discord => {
            let Some(url) = secrets.hook_url.as_deref() else {
                return Err(DomainError::invalid(format!(
                    "{} integrations need a hook_url",
                    kind.as_str()
                )));
            };
            let parsed = check_url(url, allow).map_err(|e| invalid("hook_url", e))?;
            let host = parsed.host_str().unwrap_or_default().to_owned();
            let port = parsed.port_or_known_default().unwrap_or(443);
            refuse_resolved(channels.resolve(&host, port).await)
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> DomainResult<String> {
    serde_json::to_string(value).map_err(|e| DomainError::invalid(format!("cannot encode: {e}")))
}

fn decode(domain: &Domain, row: &Integration) -> DomainResult<Channel> {
    Channel::decode(row, &domain.vault).map_err(DomainError::unavailable)
}

/// The channel's secrets as stored: JSON sealed under the master key, the row named in the AAD.
async fn seal_secrets(
    domain: &Domain,
    tx: &mut reap3r_store::Tx,
    org_id: Uuid,
    id: Uuid,
    secrets: &ChannelSecrets,
    now: i64,
) -> DomainResult<String> {
    let json = zeroize::Zeroizing::new(encode(secrets)?);
    domain
        .vault
        .seal_column(
            tx,
            SealedColumn::IntegrationSecrets,
            Some(org_id),
            id,
            json.as_bytes(),
            now,
        )
        .await
}

/// The caller's organisation's integrations, by name.
pub async fn list_integrations(domain: &Domain, caller: &Caller) -> DomainResult<Vec<Channel>> {
    let rows = domain.store.list_integrations(caller.org_id).await?;
    rows.iter().map(|r| decode(domain, r)).collect()
}

/// One integration of the caller's organisation.
pub async fn get_integration(domain: &Domain, caller: &Caller, id: Uuid) -> DomainResult<Channel> {
    let row = domain
        .store
        .integration(caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound("integration"))?;
    decode(domain, &row)
}

#[derive(Debug, Clone)]
pub struct CreateIntegration {
    pub name: String,
    pub kind: IntegrationKind,
    pub enabled: bool,
    pub email: Option<EmailInput>,
    /// The generic webhook's URL.
    pub url: Option<String>,
    pub secrets: SecretsInput,
}

impl CreateIntegration {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        channels: &Channels,
    ) -> DomainResult<Channel> {
        let name = required_text("name", &self.name, MAX_INTEGRATION_NAME_CHARS)?;
        let (config, secrets) = merge(
            self.kind,
            ChannelConfig::default(),
            ChannelSecrets::default(),
            self.email,
            self.url,
            self.secrets,
        )?;
        validate(self.kind, &config, &secrets, channels).await?;
        let now = domain.now_ms();
        let id = Uuid::now_v7();
        let mut tx = domain.begin().await?;
        let new = NewIntegration {
            id,
            org_id: caller.org_id,
            name,
            kind: self.kind.as_str().into(),
            config: encode(&config)?,
            secrets: seal_secrets(domain, &mut tx, caller.org_id, id, &secrets, now).await?,
            enabled: self.enabled,
        };
        let row = tx.create_integration(&new, now).await?;
        audit::record(
            &mut tx,
            caller,
            "alert_integration.create",
            Some(target(row.id)),
            json!({ "name": row.name, "kind": row.kind }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        decode(domain, &row)
    }
}

/// Changes an integration; `None` leaves a field as it is. The kind cannot change.
#[derive(Debug, Clone, Default)]
pub struct UpdateIntegration {
    pub id: Uuid,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub email: Option<EmailInput>,
    pub url: Option<String>,
    pub secrets: SecretsInput,
}

impl UpdateIntegration {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        channels: &Channels,
    ) -> DomainResult<Channel> {
        let name = self
            .name
            .as_deref()
            .map(|n| required_text("name", n, MAX_INTEGRATION_NAME_CHARS))
            .transpose()?;
        // Checked before the transaction: validation resolves names, which must not happen
        // while the write lock is held. The update writes the whole merged state.
        let old = domain
            .store
            .integration(caller.org_id, self.id)
            .await?
            .ok_or(DomainError::NotFound("integration"))?;
        let current = decode(domain, &old)?;
        let (config, secrets) = merge(
            current.kind,
            current.config,
            current.secrets,
            self.email,
            self.url,
            self.secrets,
        )?;
        validate(current.kind, &config, &secrets, channels).await?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let update = IntegrationUpdate {
            name: name.unwrap_or(old.name),
            config: encode(&config)?,
            secrets: seal_secrets(domain, &mut tx, caller.org_id, self.id, &secrets, now).await?,
            enabled: self.enabled.unwrap_or(old.enabled),
        };
        let row = tx
            .update_integration(caller.org_id, self.id, &update, now)
            .await
            .map_err(|e| DomainError::from_store(e, "integration"))?;
        audit::record(
            &mut tx,
            caller,
            "alert_integration.update",
            Some(target(row.id)),
            json!({ "name": row.name, "enabled": row.enabled }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        decode(domain, &row)
    }
}

/// Deletes an integration and its delivery log.
#[derive(Debug, Clone, Copy)]
pub struct DeleteIntegration {
    pub id: Uuid,
}

impl DeleteIntegration {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_integration(caller.org_id, self.id)
            .await
            .map_err(|e| DomainError::from_store(e, "integration"))?;
        audit::record(
            &mut tx,
            caller,
            "alert_integration.delete",
            Some(target(self.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// What a test did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// Sent now: whether the receiver accepted it, and its answer.
    Sent { id: Uuid, report: SendReport },
    /// Queued in the outbox; the notifier delivers it like any notification.
    Queued { id: Uuid },
}

/// Sends a test message through an integration now, or queues it (`queue`).
#[derive(Debug, Clone, Copy)]
pub struct TestIntegration {
    pub id: Uuid,
    pub queue: bool,
}

fn test_message(channel: &Channel, caller: &Caller) -> NotificationMessage {
    NotificationMessage {
        kind: NotificationKind::Test,
        org_id: channel.org_id,
        group_key: format!("test={}", channel.id),
        title: format!(
            "[info] Reap3r test message for {} (sent by {})",
            channel.name,
            caller.actor()
        ),
        severity: "info".into(),
        total: 0,
        alerts: Vec::new(),
    }
}

impl TestIntegration {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        channels: &Channels,
    ) -> DomainResult<TestOutcome> {
        let channel = get_integration(domain, caller, self.id).await?;
        let message = test_message(&channel, caller);
        let now = domain.now_ms();
        let outcome = if self.queue {
            let mut tx = domain.begin().await?;
            let id = outbox::enqueue(&mut tx, caller.org_id, channel.id, &message, now).await?;
            audit::record(
                &mut tx,
                caller,
                "alert_integration.test",
                Some(target(channel.id)),
                json!({ "queued": true, "notification_id": id }),
                now,
            )
            .await?;
            domain.commit(tx).await?;
            outbox::nudge();
            TestOutcome::Queued { id }
        } else {
            let id = Uuid::now_v7();
            let report = channels.send(&channel, &message, id, now).await;
            let mut tx = domain.begin().await?;
            audit::record(
                &mut tx,
                caller,
                "alert_integration.test",
                Some(target(channel.id)),
                json!({ "queued": false, "delivered": report.delivered, "answer": report.answer }),
                domain.now_ms(),
            )
            .await?;
            domain.commit(tx).await?;
            TestOutcome::Sent { id, report }
        };
        Ok(outcome)
    }
}
