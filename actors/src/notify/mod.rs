//! Notifications: routing of alert changes (policies, grouping, silences, maintenance windows,
//! escalation) and the notifier that delivers them from a durable outbox to SMTP, webhook,
//! Slack, Teams and Discord integrations.

mod message;
pub mod outbox;
pub mod routing;

pub use message::{NotificationAlert, NotificationKind, NotificationMessage};
