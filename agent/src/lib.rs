//! The Reap3r agent: enrols with a token, keeps its identity and pins in redb, stays connected
//! over pinned QUIC with signed heartbeats, metrics and config updates, and runs server-signed
//! jobs with a durable ledger and result outbox (docs/JOBS.md), server-granted remote shells
//! on a PTY and server-granted file transfers (docs/PROTOCOL.md).

mod backoff;
pub mod cli;
mod error;
mod files;
mod identity;
mod inventory;
mod jobs;
mod link;
pub mod metrics;
pub mod protocol;
mod session;
mod shell;
pub mod transport;

pub use backoff::Backoff;
pub use error::AgentError;
pub use identity::{AgentIdentity, IdentityStore};
pub use session::{EnrolOptions, EnrolOutcome, RunOptions, enrol, run};
pub use shell::default_shell;

/// What this agent can do, reported at hello.
pub const CAPABILITIES: &[&str] = &["heartbeat", "metrics", "inventory", "config_update"];

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
