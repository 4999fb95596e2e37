//! The Reap3r supervision tree: agent sessions, presence, and the shared fleet context.
//!
//! Actors never touch sockets: a session talks to its agent through an [`AgentLink`], so the
//! gateway supplies a QUIC link and tests supply an in-memory one. Time comes from a [`Clock`].

mod clock;
mod context;
mod events;
pub mod jobs;
mod link;
mod presence;
mod session;
mod stats;
mod supervisor;
mod verifier;

pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{FleetContext, FleetSettings, hash_enrollment_token};
pub use events::{EventBus, FleetEvent};
pub use jobs::{JobRouter, JobService, JobSupervisor};
pub use link::{AgentLink, LinkError};
pub use presence::{PresenceMsg, PresenceWriter};
pub use session::{AgentSession, SessionArgs, SessionMsg};
pub use stats::{FleetStats, StatsSnapshot};
pub use supervisor::{SessionRegistry, SessionSupervisor, SupervisorArgs, SupervisorMsg};
pub use verifier::{MAX_BATCH as MAX_SIGNATURE_BATCH, SignatureVerifier, VerifyError};
