//! Alerting rows: rules and the per-agent state their actors resume from (`rules.rs`), alert
//! events with their history and notes (`events.rs`), agents as rules see them (`directory.rs`).

mod directory;
mod events;
mod rules;

pub use directory::AlertAgent;
pub use events::{
    AlertEvent, AlertEventFilter, AlertHistoryEntry, AlertNote, AlertStats, MAX_ALERT_EVENT_PAGE,
    MAX_ALERT_NOTE_CHARS, NewAlertEvent, SYSTEM_ACTOR,
};
pub use rules::{AlertRule, AlertRuleState, AlertRuleUpdate, NewAlertRule};
