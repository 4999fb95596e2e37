//! Alerting: rules (one supervised actor per enabled rule, state persisted), the alert events
//! they raise, and the changes they hand to notification routing.

mod actor;
mod change;
mod directory;
mod events;
pub mod machine;
mod manage;
mod publish;
pub mod rule;
mod samples;
mod supervisor;

pub use change::{AlertChange, AlertChangeKind, AlertSink, Severity};
pub use events::{
    AckAlert, AddAlertNote, EventDetail, EventPage, ListEvents, MAX_SNOOZE_S, MAX_TOP_AGENTS,
    RESOLVE_AUDIT_ACTION, ResolveAlert, SnoozeAlert, alert_stats, get_event,
};
pub use manage::{
    CreateRule, DeleteRule, RULE_AUDIT_PREFIX, Rule, UpdateRule, get_rule, list_rules,
};
pub use publish::{AgentFacts, NoAlertSink, change_of};
pub use rule::{
    Aggregation, MAX_FOR_S, MAX_HOLD_S, MAX_RULE_NAME_CHARS, MAX_SCOPE_ITEMS, MAX_THRESHOLD_ABS,
    MAX_WINDOW_S, MIN_PRESENCE_FOR_S, Operator, RuleKind, RuleScope, Threshold,
};
pub use samples::{AlertSamples, MAX_QUEUED_BATCHES};
pub use supervisor::{AlertSettings, AlertSupervisor, AlertSupervisorMsg, AlertingArgs};
