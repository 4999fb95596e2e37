//! Alerting: rules (one supervised actor per enabled rule, state persisted), the alert events
//! they raise, and the changes they hand to notification routing.

mod change;
pub mod machine;
pub mod rule;

pub use change::{AlertChange, AlertChangeKind, AlertSink, Severity};
pub use rule::{
    Aggregation, MAX_FOR_S, MAX_HOLD_S, MAX_RULE_NAME_CHARS, MAX_SCOPE_ITEMS, MAX_THRESHOLD_ABS,
    MAX_WINDOW_S, MIN_PRESENCE_FOR_S, Operator, RuleKind, RuleScope, Threshold,
};
