//! Notification integrations (where alerts are sent) and the notifier's outbox (what is to be
//! sent, and how each delivery went). The store keeps channel settings and secrets as JSON text;
//! their shape belongs to the domain (`actors::notify`).

mod integrations;
mod outbox;

pub use integrations::{Integration, IntegrationUpdate, NewIntegration};
pub use outbox::{
    AttemptEnd, ClaimedNotification, MAX_NOTIFICATION_PAGE, NewNotification, Notification,
    NotificationFilter, NotificationState,
};
