//! Notification routing after Alertmanager's model: policies pick integrations by severity and
//! scope and group alerts (`group_wait`, `group_interval`, `repeat_interval`), silences mute by
//! matchers, maintenance windows hold notifications and pause escalation and, when they end,
//! tell what still fires once; escalation steps reach further integrations while nothing is
//! acknowledged; snoozed alerts are held like a maintenance window of their own. The
//! decisions are a pure core ([`RoutingCore`]); the driver actor persists them with the outbox
//! entries they produce and, when it starts, routes what it missed ([`missed_changes`]); the
//! CRUD operations live beside them.

mod core;
mod driver;
mod group;
mod manage;
mod model;
mod reconcile;
mod schedule;

pub use self::core::{Effect, GroupId, GroupWrite, Input, RoutingConfig, RoutingCore};
pub use driver::{MAX_PENDING_CHANGES, RoutingDriver, RoutingMsg, RoutingSink, load_config};
pub use group::{AlertFacts, Escalation, Group, TrackedAlert};
pub use manage::{
    CreateRouting, DeleteRouting, ROUTING_AUDIT_PREFIX, RoutingSpec, Saved, UpdateRouting,
    get_routing, list_routing,
};
pub use model::*;
pub use reconcile::{missed_changes, tracked_firing};
pub use schedule::{
    Compiled, Day, MAX_ONE_OFF_WINDOW_S, MAX_TIME_ZONE_CHARS, MAX_WEEKLY_DURATION_MINUTES, Schedule,
};

#[cfg(test)]
mod tests;
