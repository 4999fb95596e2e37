//! The agent protocol core, shared by the real agent (`session.rs`, `jobs/`), the fleet
//! simulator (`reap3r-bench`) and the end-to-end tests' raw client: one implementation of the
//! handshake, session signing, the job ledger rules and outbox replay.
//!
//! Shaped as "pure core, thin drivers" (as quinn-proto is): nothing here does I/O, reads a
//! clock or touches tokio. Drivers pass in received frames, the time (`now_ms`) and local
//! events, and carry out the [`Effect`]s they get back: frames to send on a [`Lane`], jobs to
//! start, streams to finish, configs to apply. The ledger and the outbox are reached through
//! [`JobStore`] (redb in the agent, [`MemoryStore`] in the simulator), so check-and-record is
//! one atomic step of the store while the rules stay here.
//!
//! - [`handshake`]: challenge → hello/enrol → welcome/enrol result, then a [`Session`].
//! - [`core`]: [`AgentCore`], the live session and the job rules.
//! - [`resend`]: when an unacknowledged result goes out again on a live connection.
//! - [`store`]: [`JobStore`] and [`MemoryStore`].

pub mod core;
pub mod handshake;
pub mod resend;
#[cfg(test)]
mod rig;
pub mod store;

pub use self::core::{
    AgentCore, ConnId, Effect, FrameError, GRANT_SKEW_MS, Lane, StreamId, Welcomed,
};
pub use handshake::{Answer, Challenged, HandshakeError, Pending, ServerChannel, Session};
pub use resend::RESEND_AFTER_MS;
pub use store::{JobStore, MemoryStore};
