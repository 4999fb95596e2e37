//! File transfers: an operator with `file:push` uploads a file to the server and pushes it to a
//! path on an agent; one with `file:pull` pulls a file from an agent to the server and downloads
//! it. Every transfer runs on a channel of its own (`reap3r_wire::Channel`) under a grant the
//! server signs; chunks are hashed one by one and the whole file at the end; a cut transfer
//! resumes where the receiver stands. Files are kept by the server content-addressed in its data
//! dir; starts and ends are audited.
//!
//! - [`ops`]: the operations — [`UploadFile`], [`ListFiles`], [`OpenFile`], [`PushFile`],
//!   [`PullFile`], [`GetFileTransfer`], [`ListFileTransfers`].
//! - [`transfer`]: one task per transfer: attempts, the sender (push) or receiver (pull).
//! - [`ending`]: the end's record, the pulled file and the audit entry in one transaction.
//! - [`blobs`]: the content-addressed store on disk.

mod blobs;
mod ending;
mod ops;
mod transfer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reap3r_store::Uuid;
use reap3r_wire::SigningKey;
use tokio::sync::watch;
use tracing::warn;

pub use blobs::{BlobStore, PutError, is_blake3_hex};
pub use ops::{
    GetFileTransfer, ListFileTransfers, ListFiles, OpenFile, OpenedFile, PullFile, PushFile,
    UploadFile, transfer_target,
};

use crate::{AgentRouter, Domain};

/// Limits of file transfers (defaults are what a node runs with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// Largest file uploaded, pushed or pulled.
    pub max_file_bytes: u64,
    /// Transfers running at once on one agent.
    pub max_per_agent: u32,
    /// Bytes per second one transfer sends (the server for a push, the agent for a pull); 0: no
    /// limit. For links a transfer must not fill.
    pub rate_limit_bytes_per_s: u64,
    /// How long a cut transfer waits for its agent to come back before it fails.
    pub resume_timeout_s: u32,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: 1024 * 1024 * 1024,
            max_per_agent: 4,
            rate_limit_bytes_per_s: 0,
            resume_timeout_s: 600,
        }
    }
}

/// Transfers one node runs at once, whatever the agents.
pub const MAX_NODE_TRANSFERS: usize = 256;

/// The transfers this node runs; cheap to clone.
#[derive(Clone)]
pub struct FileHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    domain: Domain,
    router: Arc<dyn AgentRouter>,
    server_key: Arc<SigningKey>,
    node_id: String,
    settings: FileSettings,
    blobs: BlobStore,
    /// Running transfers: their agent, and the signal that ends them at shutdown.
    running: Mutex<HashMap<Uuid, Uuid>>,
    stop: watch::Sender<bool>,
    ended: tokio::sync::Notify,
}

impl std::fmt::Debug for FileHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHub")
            .field("node_id", &self.inner.node_id)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl FileHub {
    pub fn new(
        domain: Domain,
        router: Arc<dyn AgentRouter>,
        server_key: Arc<SigningKey>,
        node_id: String,
        settings: FileSettings,
        blobs: BlobStore,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner {
                domain,
                router,
                server_key,
                node_id,
                settings,
                blobs,
                running: Mutex::new(HashMap::new()),
                stop: watch::Sender::new(false),
                ended: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn settings(&self) -> &FileSettings {
        &self.inner.settings
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Uuid>> {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Transfers running right now.
    pub fn active(&self) -> usize {
        self.running().len()
    }

    /// Takes a place for a transfer on `agent_id`, within the limits.
    fn reserve(&self, transfer: Uuid, agent_id: Uuid) -> Result<(), String> {
        let mut running = self.running();
        let on_agent = running.values().filter(|a| **a == agent_id).count();
        if on_agent >= self.inner.settings.max_per_agent as usize {
            return Err(format!(
                "the agent already runs {on_agent} transfers (at most {})",
                self.inner.settings.max_per_agent
            ));
        }
        if running.len() >= MAX_NODE_TRANSFERS {
            return Err(format!(
                "this server node already runs {MAX_NODE_TRANSFERS} transfers"
            ));
        }
        running.insert(transfer, agent_id);
        Ok(())
    }

    fn transfer_ended(&self, transfer: Uuid) {
        self.running().remove(&transfer);
        self.inner.ended.notify_waiters();
    }

    /// Ends (and audits) the transfers this node left unfinished when it last stopped.
    pub async fn recover(&self) -> crate::DomainResult<usize> {
        ending::end_orphans(self).await
    }

    /// Ends every transfer ("the server is shutting down") and waits, up to `grace`, for their
    /// records to be written.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.send_replace(true);
        let left = crate::drain::wait_until_idle(&self.inner.ended, grace, || self.active()).await;
        if left > 0 {
            warn!(transfers = left, "file transfers still ending at shutdown");
        }
    }
}
