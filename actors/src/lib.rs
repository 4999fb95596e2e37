//! The Reap3r domain: one folder per feature (`access`, `audit`, `enrolment`, `groups`, `orgs`,
//! `jobs`, `metrics`, `alerts`, `notify`, …) holding its operations (typed, validated commands the API and the CLI both call),
//! its pure state machines and the actors that drive them; plus the supervision tree of agent
//! sessions and presence.
//!
//! Actors never touch sockets: a session talks to its agent through an [`AgentLink`], so the
//! gateway supplies a QUIC link and tests supply an in-memory one. Time comes from a [`Clock`].

pub mod access;
pub mod alerts;
pub mod audit;
mod clock;
mod context;
mod domain;
mod drain;
pub mod enrolment;
mod error;
mod events;
pub mod files;
pub mod groups;
pub mod jobs;
mod link;
pub mod metrics;
pub mod notify;
pub mod orgs;
mod presence;
mod root;
mod router;
mod session;
pub mod shell;
mod slot;
mod stats;
mod supervisor;
pub mod updates;
pub mod vault;
mod verifier;
pub mod wake;

pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{FleetContext, FleetSettings};
pub use domain::Domain;
pub use drain::{Drain, DrainSignal};
pub use error::{DomainError, DomainResult, optional_text, required_text};
pub use events::{EventBus, FleetEvent};
pub use jobs::{JobEngine, JobRouter, JobSupervisor};
pub use link::{AgentLink, ChannelPipe, LinkError};
pub use presence::{PresenceMsg, PresenceWriter};
pub use root::{RootArgs, RootMsg, RootSupervisor, Subsystem, Subsystems};
pub use router::{AgentChannel, AgentCommand, AgentRouter, ChannelRequest, Delivery, LocalRouter};
pub use session::{AgentSession, SessionArgs, SessionMsg};
pub use slot::ActorSlot;
pub use stats::{FleetStats, StatsSnapshot};
pub use supervisor::{SessionRegistry, SessionSupervisor, SupervisorArgs, SupervisorMsg};
pub use verifier::{MAX_BATCH as MAX_SIGNATURE_BATCH, SignatureVerifier, VerifyError};
