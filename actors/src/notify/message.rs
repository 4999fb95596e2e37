//! The message routing hands to the notifier for one integration: what the group says, not how
//! a channel formats it. The notifier stores it in its outbox (as JSON) in the same transaction
//! that decides to send it, and renders it per channel when it delivers.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// New alerts in a group (after group_wait, or group_interval for later ones).
    Firing,
    /// Alerts of a group resolved.
    Resolved,
    /// The group is still firing after repeat_interval, or a maintenance window ended on it.
    Reminder,
    /// Not acknowledged within an escalation step's delay.
    Escalation,
    /// `POST /api/alerting/integrations/{id}/test`.
    Test,
}

/// One alert in a message (a group carries a sample of them and the total count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationAlert {
    pub event_id: Uuid,
    pub rule_name: String,
    pub severity: String,
    pub agent_id: Option<Uuid>,
    pub hostname: Option<String>,
    pub summary: String,
    pub fired_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
}

/// What one integration is asked to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationMessage {
    pub kind: NotificationKind,
    pub org_id: Uuid,
    /// The group's key ("rule=<id>,org=<id>" by default); receivers may thread by it.
    pub group_key: String,
    /// "[critical] High CPU: 3 agents firing".
    pub title: String,
    pub severity: String,
    /// How many alerts the group holds in total.
    pub total: u64,
    /// Up to [`NotificationMessage::SAMPLE`] of them.
    pub alerts: Vec<NotificationAlert>,
}

impl NotificationMessage {
    /// How many alerts a message lists; a 10,000-agent outage is one message with a count.
    pub const SAMPLE: usize = 20;
}
