//! The `reap3r` server: configuration, identity, QUIC gateway, composition and CLI commands.
//! Business logic lives in `actors` and `store`; this crate wires them to the outside world.

pub mod api_tls;
pub mod cli;
pub mod config;
pub mod demo;
pub mod entry;
pub mod gateway;
pub mod identity;
pub mod node;
pub mod serve;

pub use config::Config;
pub use identity::ServerIdentity;
pub use node::{Node, NodeError, open_store};

/// Installs ring as the process-wide rustls provider; a second provider in one process panics,
/// so every entry point calls this first (it is idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
