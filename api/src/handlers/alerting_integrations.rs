//! Alerting integrations (email, webhook, Slack, Teams, Discord): create, list, change, delete,
//! test; and the notifier's delivery log with retry of dead letters. Secrets are write-only:
//! requests may set them, responses only say whether each is set.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use reap3r_actors::notify::{
    self, Channel, CreateIntegration, DeleteIntegration, EmailInput, IntegrationKind,
    RetryNotification, SecretsInput, SmtpSecurity, TestIntegration, TestOutcome, UpdateIntegration,
};
use reap3r_store::{Notification, NotificationState, Uuid};

use super::auth::{Done, done};
use super::{ApiTags, page_limit};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum IntegrationKindName {
    Email,
    Webhook,
    Slack,
    Teams,
    Discord,
}

impl From<IntegrationKindName> for IntegrationKind {
    fn from(k: IntegrationKindName) -> Self {
        match k {
            IntegrationKindName::Email => IntegrationKind::Email,
            IntegrationKindName::Webhook => IntegrationKind::Webhook,
            IntegrationKindName::Slack => IntegrationKind::Slack,
            IntegrationKindName::Teams => IntegrationKind::Teams,
            IntegrationKindName::Discord => IntegrationKind::Discord,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SmtpSecurityName {
    Starttls,
    Tls,
    Plain,
}

impl From<SmtpSecurityName> for SmtpSecurity {
    fn from(s: SmtpSecurityName) -> Self {
        match s {
            SmtpSecurityName::Starttls => SmtpSecurity::Starttls,
            SmtpSecurityName::Tls => SmtpSecurity::Tls,
            SmtpSecurityName::Plain => SmtpSecurity::Plain,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum NotificationStateName {
    Pending,
    Sending,
    Delivered,
    Dead,
}

impl From<NotificationStateName> for NotificationState {
    fn from(s: NotificationStateName) -> Self {
        match s {
            NotificationStateName::Pending => NotificationState::Pending,
            NotificationStateName::Sending => NotificationState::Sending,
            NotificationStateName::Delivered => NotificationState::Delivered,
            NotificationStateName::Dead => NotificationState::Dead,
        }
    }
}

/// SMTP settings of an email integration (on a change, absent fields stay as they are).
#[derive(Debug, Object)]
pub struct EmailSettings {
    /// SMTP server host name or address.
    #[oai(validator(max_length = 253))]
    pub host: Option<String>,
    /// Default 587 (starttls), 465 (tls) or 25 (plain).
    #[oai(validator(minimum(value = "1"), maximum(value = "65535")))]
    pub port: Option<u16>,
    pub security: Option<SmtpSecurityName>,
    /// SMTP AUTH user; an empty string turns AUTH off.
    #[oai(validator(max_length = 320))]
    pub username: Option<String>,
    /// Sender, `a@example.com` or `Name <a@example.com>`.
    #[oai(validator(max_length = 320))]
    pub from: Option<String>,
    /// Recipients, 1 to 50.
    #[oai(validator(max_items = 50, min_items = 1))]
    pub to: Option<Vec<String>>,
    /// PEM CA certificates (1 to 16 `CERTIFICATE` blocks) to verify the server's TLS
    /// certificate with, instead of the public roots: for a self-hosted server with a private
    /// CA. The host name is verified either way. An empty string goes back to the public roots.
    #[oai(validator(max_length = 65536))]
    pub ca_pem: Option<String>,
}

impl From<EmailSettings> for EmailInput {
    fn from(e: EmailSettings) -> Self {
        Self {
            host: e.host,
            port: e.port,
            security: e.security.map(Into::into),
            username: e.username,
            from: e.from,
            to: e.to,
            ca_pem: e.ca_pem,
        }
    }
}

#[derive(Debug, Object)]
pub struct CreateIntegrationRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    pub kind: IntegrationKindName,
    /// Default true.
    pub enabled: Option<bool>,
    pub email: Option<EmailSettings>,
    /// The generic webhook's http(s) URL.
    #[oai(validator(max_length = 2048))]
    pub url: Option<String>,
    /// SMTP password (write-only).
    #[oai(validator(max_length = 1024))]
    pub smtp_password: Option<String>,
    /// The webhook's HMAC-SHA256 signing secret, 16 bytes or more (write-only).
    #[oai(validator(max_length = 1024))]
    pub webhook_secret: Option<String>,
    /// The Slack, Teams or Discord incoming-webhook URL (write-only: it is the credential).
    #[oai(validator(max_length = 2048))]
    pub hook_url: Option<String>,
}

#[derive(Debug, Object)]
pub struct UpdateIntegrationRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub email: Option<EmailSettings>,
    /// The generic webhook's http(s) URL.
    #[oai(validator(max_length = 2048))]
    pub url: Option<String>,
    /// Replaces the SMTP password; an empty string clears it.
    #[oai(validator(max_length = 1024))]
    pub smtp_password: Option<String>,
    /// Replaces the webhook's signing secret.
    #[oai(validator(max_length = 1024))]
    pub webhook_secret: Option<String>,
    /// Replaces the incoming-webhook URL.
    #[oai(validator(max_length = 2048))]
    pub hook_url: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EmailSettingsView {
    pub host: String,
    pub port: u16,
    /// starttls, tls or plain.
    pub security: String,
    pub username: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// The CA certificates the server is verified with, when not the public roots.
    pub ca_pem: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IntegrationView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    /// email, webhook, slack, teams or discord.
    pub kind: String,
    pub enabled: bool,
    pub email: Option<EmailSettingsView>,
    /// The generic webhook's URL.
    pub url: Option<String>,
    /// Whether an SMTP password is set (it is never shown).
    pub smtp_password_set: bool,
    /// Whether a webhook signing secret is set (it is never shown).
    pub webhook_secret_set: bool,
    /// Whether an incoming-webhook URL is set (it is never shown).
    pub hook_url_set: bool,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl From<Channel> for IntegrationView {
    fn from(c: Channel) -> Self {
        Self {
            id: c.id,
            org_id: c.org_id,
            name: c.name,
            kind: c.kind.as_str().into(),
            enabled: c.enabled,
            email: c.config.email.map(|e| EmailSettingsView {
                host: e.host,
                port: e.port,
                security: e.security.as_str().into(),
                username: e.username,
                from: e.from,
                to: e.to,
                ca_pem: e.ca_pem,
            }),
            url: c.config.url,
            smtp_password_set: c.secrets.smtp_password.is_some(),
            webhook_secret_set: c.secrets.webhook_secret.is_some(),
            hook_url_set: c.secrets.hook_url.is_some(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IntegrationTestResult {
    /// The test message's id, sent as its idempotency id.
    pub notification_id: Uuid,
    /// Queued in the outbox (`queue=true`) rather than sent now.
    pub queued: bool,
    /// Whether the receiver accepted it (sent now only).
    pub delivered: Option<bool>,
    /// The receiver's answer: HTTP status and body start, or the SMTP reply (sent now only).
    pub answer: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NotificationView {
    /// Also the idempotency id every attempt carries (`X-Reap3r-Notification-Id`).
    pub id: Uuid,
    pub integration_id: Uuid,
    /// firing, resolved, reminder, escalation or test.
    pub kind: String,
    /// pending, sending, delivered or dead.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    /// The receiver's answer to the delivered attempt.
    pub last_answer: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

impl From<Notification> for NotificationView {
    fn from(n: Notification) -> Self {
        Self {
            id: n.id,
            integration_id: n.integration_id,
            kind: n.kind,
            state: n.state.as_str().into(),
            attempts: n.attempts,
            next_attempt_at: n.next_attempt_at,
            last_error: n.last_error,
            last_answer: n.last_answer,
            created_at: n.created_at,
            updated_at: n.updated_at,
            delivered_at: n.delivered_at,
        }
    }
}

fn secrets(
    smtp_password: Option<String>,
    webhook_secret: Option<String>,
    hook_url: Option<String>,
) -> SecretsInput {
    SecretsInput {
        smtp_password,
        webhook_secret,
        hook_url,
    }
}

pub struct AlertingIntegrationsApi;

#[OpenApi(tag = "ApiTags::Alerting")]
impl AlertingIntegrationsApi {
    /// List the organisation's alerting integrations (secrets only as "set" flags).
    #[oai(
        path = "/api/alerting/integrations",
        method = "get",
        operation_id = "listAlertingIntegrations"
    )]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
    ) -> ApiResult<Json<Vec<IntegrationView>>> {
        let all = notify::list_integrations(&ctx.domain, auth.caller()).await?;
        Ok(Json(all.into_iter().map(IntegrationView::from).collect()))
    }

    /// Create an integration. Receivers on loopback, link-local or metadata addresses are
    /// refused unless the server allows them.
    #[oai(
        path = "/api/alerting/integrations",
        method = "post",
        operation_id = "createAlertingIntegration"
    )]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<CreateIntegrationRequest>,
    ) -> ApiResult<Json<IntegrationView>> {
        let b = body.0;
        let created = CreateIntegration {
            name: b.name,
            kind: b.kind.into(),
            enabled: b.enabled.unwrap_or(true),
            email: b.email.map(Into::into),
            url: b.url,
            secrets: secrets(b.smtp_password, b.webhook_secret, b.hook_url),
        }
        .run(&ctx.domain, auth.caller(), &ctx.notify)
        .await?;
        Ok(Json(created.into()))
    }

    /// Change an integration; absent fields stay as they are (the kind cannot change).
    #[oai(
        path = "/api/alerting/integrations/:id",
        method = "patch",
        operation_id = "updateAlertingIntegration"
    )]
    async fn update(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<UpdateIntegrationRequest>,
    ) -> ApiResult<Json<IntegrationView>> {
        let b = body.0;
        let changed = UpdateIntegration {
            id: id.0,
            name: b.name,
            enabled: b.enabled,
            email: b.email.map(Into::into),
            url: b.url,
            secrets: secrets(b.smtp_password, b.webhook_secret, b.hook_url),
        }
        .run(&ctx.domain, auth.caller(), &ctx.notify)
        .await?;
        Ok(Json(changed.into()))
    }

    /// Delete an integration and its delivery log.
    #[oai(
        path = "/api/alerting/integrations/:id",
        method = "delete",
        operation_id = "deleteAlertingIntegration"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        DeleteIntegration { id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }

    /// Send a test message now and report the receiver's answer; with `queue=true`, queue it in
    /// the notifier's outbox instead (delivered with retries, like any notification).
    #[oai(
        path = "/api/alerting/integrations/:id/test",
        method = "post",
        operation_id = "testAlertingIntegration"
    )]
    async fn test(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        /// Queue the message instead of sending it now.
        queue: Query<Option<bool>>,
    ) -> ApiResult<Json<IntegrationTestResult>> {
        let outcome = TestIntegration {
            id: id.0,
            queue: queue.0.unwrap_or(false),
        }
        .run(&ctx.domain, auth.caller(), &ctx.notify)
        .await?;
        Ok(Json(match outcome {
            TestOutcome::Sent { id, report } => IntegrationTestResult {
                notification_id: id,
                queued: false,
                delivered: Some(report.delivered),
                answer: Some(report.answer),
            },
            TestOutcome::Queued { id } => IntegrationTestResult {
                notification_id: id,
                queued: true,
                delivered: None,
                answer: None,
            },
        }))
    }

    /// The notifier's delivery log, newest first: state, attempts, last error, idempotency id.
    #[oai(
        path = "/api/alerting/notifications",
        method = "get",
        operation_id = "listAlertingNotifications"
    )]
    async fn notifications(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        state: Query<Option<NotificationStateName>>,
        /// Only this integration's notifications.
        integration_id: Query<Option<Uuid>>,
        /// Page size, 1 to 500 (default 100).
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<NotificationView>>> {
        let limit = page_limit(limit.0, notify::MAX_NOTIFICATION_PAGE)?;
        let rows = notify::list_notifications(
            &ctx.domain,
            auth.caller(),
            state.0.map(Into::into),
            integration_id.0,
            limit,
        )
        .await?;
        Ok(Json(rows.into_iter().map(NotificationView::from).collect()))
    }

    /// Queue a dead-lettered notification again, under the same idempotency id.
    #[oai(
        path = "/api/alerting/notifications/:id/retry",
        method = "post",
        operation_id = "retryAlertingNotification"
    )]
    async fn retry(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<NotificationView>> {
        let row = RetryNotification { id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(Json(row.into()))
    }
}
