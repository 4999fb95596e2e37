//! Alerting: rules (one supervised actor per enabled rule, state persisted), the alert events
//! they raise, and the changes they hand to notification routing.

mod change;

pub use change::{AlertChange, AlertChangeKind, AlertSink, Severity};
