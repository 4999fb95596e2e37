//! `reap3r serve`: start a node and run until SIGINT/SIGTERM, then drain.

use anyhow::Result;
use tracing::info;

use crate::config::Config;
use crate::node::Node;

pub async fn run(config: Config) -> Result<()> {
    let node = Node::start(config).await?;
    info!(agents_dial = %node.public_addr(), fingerprint = %node.identity.fingerprint(), server_key = %node.identity.public_key_hex(), "reap3r serving");
    wait_for_signal().await;
    info!("shutdown requested");
    node.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
