//! What alerting hands to notification routing: one [`AlertChange`] each time an alert event
//! (one per rule and agent while active) fires, resolves, is acknowledged or snoozed. The change is
//! committed (event row and audit record) before it is handed on, so routing never notifies
//! about something the database does not hold.

use std::fmt;
use std::str::FromStr;

use reap3r_store::Uuid;

/// How urgent an alert is; policies choose channels by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: &'static [Severity] = &[Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Severity::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown severity {s:?} (expected info, warning or critical)"))
    }
}

/// What happened to an alert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertChangeKind {
    /// Pending → firing (its `for` elapsed).
    Fired,
    /// Firing → resolved, by the condition clearing or by hand.
    Resolved,
    /// An operator acknowledged it: escalation stops.
    Acked,
    /// An operator snoozed it until [`AlertChange::snoozed_until_ms`]: no reminders and no
    /// escalation until then, one message when it ends if it still fires.
    Snoozed,
}

/// One committed change of one alert event, with what routing needs to match policies,
/// silences and maintenance windows and to write the message.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub event_id: Uuid,
    pub rule_id: Uuid,
    pub rule_name: String,
    pub org_id: Uuid,
    /// The agent the event is about; `None` for rules that are not per agent.
    pub agent_id: Option<Uuid>,
    pub hostname: Option<String>,
    pub agent_tags: Vec<String>,
    pub folder_id: Option<Uuid>,
    pub severity: Severity,
    pub kind: AlertChangeKind,
    /// When the event first fired (stays the same across its changes).
    pub fired_at_ms: i64,
    /// When this change happened.
    pub at_ms: i64,
    /// One line for humans: "cpu.percent avg 5m 97.2 > 90".
    pub summary: String,
    pub value: Option<f64>,
    /// Until when the event is snoozed (as committed; every kind carries it, so an event
    /// snoozed while pending fires snoozed).
    pub snoozed_until_ms: Option<i64>,
}

/// Where alerting hands committed changes. Routing implements it; it must not block (it queues
/// and returns), because rule actors call it from their handlers.
pub trait AlertSink: Send + Sync + 'static {
    fn alert_changed(&self, change: AlertChange);
}
