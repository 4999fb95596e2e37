//! Notifications: routing of alert changes (policies, grouping, silences, maintenance windows,
//! escalation) and the notifier that delivers them from a durable outbox to SMTP, webhook,
//! Slack, Teams and Discord integrations.

pub mod channels;
mod deliveries;
mod integrations;
mod message;
mod notifier;
pub mod outbox;
mod retry;
pub mod routing;
pub mod ssrf;

pub use channels::{
    Channel, ChannelConfig, Channels, EmailConfig, IntegrationKind, NotifySettings, SendReport,
    SmtpSecurity,
};
pub use deliveries::{MAX_NOTIFICATION_PAGE, RetryNotification, list_notifications};
pub use integrations::{
    CreateIntegration, DeleteIntegration, EmailInput, MAX_ADDRESS_CHARS,
    MAX_INTEGRATION_NAME_CHARS, SecretsInput, TestIntegration, TestOutcome, UpdateIntegration,
    get_integration, list_integrations,
};
pub use message::{NotificationAlert, NotificationKind, NotificationMessage};
pub use notifier::{
    IDLE_WAKE_MS, MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_INTEGRATION, Notifier, NotifierArgs,
    NotifierMsg, NotifierSettings,
};
pub use retry::{BASE_BACKOFF_MS, MAX_ATTEMPTS, MAX_BACKOFF_MS, RetryPolicy};
