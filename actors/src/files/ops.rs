//! The file operations: upload a file to the server, list and open (download) the files an
//! organisation holds, push one to an agent, pull one from an agent, and read transfers. Each
//! mutation and its audit entry commit in one transaction.

use std::path::PathBuf;

use bytes::Bytes;
use futures::Stream;
use reap3r_store::{
    FileBlob, FileDirectionRow, FileTransfer, MAX_FILE_PAGE, NewFileTransfer, Uuid,
};
use reap3r_wire::{FILE_CAPABILITY, MAX_OPERATOR_LEN, check_path};
use serde_json::json;

use super::blobs::{PutError, is_blake3_hex};
use super::{FileHub, transfer};
use crate::access::{Caller, Permission};
use crate::audit;
use crate::error::{DomainError, DomainResult};
use crate::shell::truncate;

/// Longest name an upload may carry, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// The audit target of a transfer.
pub fn transfer_target(id: Uuid) -> String {
    format!("file_transfer:{id}")
}

fn blob_target(blake3: &str) -> String {
    format!("file:{blake3}")
}

fn check_hash(blake3: &str) -> DomainResult<()> {
    if is_blake3_hex(blake3) {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "a file is named by its BLAKE3: 64 lowercase hex digits",
        ))
    }
}

/// Stores a file the caller uploads (`file:push`), at most the configured size; the same bytes
/// uploaded twice are one file.
#[derive(Debug, Clone, Default)]
pub struct UploadFile {
    pub name: Option<String>,
}

impl UploadFile {
    pub async fn run<S, E>(self, hub: &FileHub, caller: &Caller, body: S) -> DomainResult<FileBlob>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        caller.require(Permission::FilePush)?;
        if let Some(name) = &self.name
            && (name.is_empty()
                || name.len() > MAX_FILE_NAME_BYTES
                || name.contains('/')
                || name.chars().any(char::is_control))
        {
            return Err(DomainError::invalid(format!(
                "a file name is 1 to {MAX_FILE_NAME_BYTES} bytes, without `/` or control \
                 characters"
            )));
        }
        let cap = hub.inner.settings.max_file_bytes;
        let (blake3, size) = hub.inner.blobs.put(body, cap).await.map_err(|e| match e {
            PutError::TooLarge(_) => DomainError::TooLarge(e.to_string()),
            PutError::Body(_) => DomainError::invalid(e.to_string()),
            PutError::Io(_) => DomainError::Unavailable(e.to_string()),
        })?;
        let domain = &hub.inner.domain;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let blob = tx
            .put_file_blob(&FileBlob {
                org_id: caller.org_id,
                blake3: blake3.clone(),
                size: size as i64,
                name: self.name.clone(),
                created_by: caller.actor(),
                created_at: now,
            })
            .await?;
        audit::record(
            &mut tx,
            caller,
            "file.upload",
            Some(blob_target(&blake3)),
            json!({ "size": size, "name": self.name }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(blob)
    }
}

/// The files the caller's organisation holds, newest first (`file:view`).
#[derive(Debug, Clone, Default)]
pub struct ListFiles {
    pub limit: Option<i64>,
}

impl ListFiles {
    pub async fn run(self, hub: &FileHub, caller: &Caller) -> DomainResult<Vec<FileBlob>> {
        caller.require(Permission::FileView)?;
        Ok(hub
            .inner
            .domain
            .store
            .list_file_blobs(caller.org_id, self.limit.unwrap_or(100))
            .await?)
    }
}

/// A file to read: its record and where its bytes are.
#[derive(Debug, Clone)]
pub struct OpenedFile {
    pub blob: FileBlob,
    pub path: PathBuf,
}

/// Opens a file of the caller's organisation for download (`file:pull`); audited.
#[derive(Debug, Clone)]
pub struct OpenFile {
    pub blake3: String,
}

impl OpenFile {
    pub async fn run(self, hub: &FileHub, caller: &Caller) -> DomainResult<OpenedFile> {
        caller.require(Permission::FilePull)?;
        check_hash(&self.blake3)?;
        let domain = &hub.inner.domain;
        let blob = domain
            .store
            .file_blob(caller.org_id, &self.blake3)
            .await?
            .ok_or(DomainError::NotFound("file"))?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        audit::record(
            &mut tx,
            caller,
            "file.download",
            Some(blob_target(&blob.blake3)),
            json!({ "size": blob.size }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(OpenedFile {
            path: hub.inner.blobs.path_of(&blob.blake3),
            blob,
        })
    }
}

/// Pushes a file the organisation holds to `path` on an online agent (`file:push`): the agent
/// writes it beside the path and renames it into place once it verified.
#[derive(Debug, Clone)]
pub struct PushFile {
    pub agent_id: Uuid,
    pub blake3: String,
    pub path: String,
}

impl PushFile {
    pub async fn run(self, hub: &FileHub, caller: &Caller) -> DomainResult<FileTransfer> {
        caller.require(Permission::FilePush)?;
        check_hash(&self.blake3)?;
        let blob = hub
            .inner
            .domain
            .store
            .file_blob(caller.org_id, &self.blake3)
            .await?
            .ok_or(DomainError::NotFound("file"))?;
        let request = Request {
            agent_id: self.agent_id,
            direction: FileDirectionRow::Push,
            path: self.path,
            blob: Some(blob),
        };
        request.start(hub, caller).await
    }
}

/// Pulls the file at `path` on an online agent to the server (`file:pull`); once complete the
/// organisation holds it (download it by its BLAKE3).
#[derive(Debug, Clone)]
pub struct PullFile {
    pub agent_id: Uuid,
    pub path: String,
}

impl PullFile {
    pub async fn run(self, hub: &FileHub, caller: &Caller) -> DomainResult<FileTransfer> {
        caller.require(Permission::FilePull)?;
        let request = Request {
            agent_id: self.agent_id,
            direction: FileDirectionRow::Pull,
            path: self.path,
            blob: None,
        };
        request.start(hub, caller).await
    }
}

/// A push or a pull to start.
struct Request {
    agent_id: Uuid,
    direction: FileDirectionRow,
    path: String,
    blob: Option<FileBlob>,
}

impl Request {
    async fn start(self, hub: &FileHub, caller: &Caller) -> DomainResult<FileTransfer> {
        check_path(&self.path)
            .map_err(|e| DomainError::invalid(format!("path {:?}: {e}", self.path)))?;
        let agent = crate::router::reachable_agent(
            &hub.inner.domain,
            hub.inner.router.as_ref(),
            caller.org_id,
            self.agent_id,
            FILE_CAPABILITY,
            "the agent does not transfer files (not reported in its hello; an agent started \
             with --files off does not)",
        )
        .await?;
        let id = Uuid::new_v4();
        hub.reserve(id, agent.id).map_err(DomainError::conflict)?;
        let started = self.record(hub, caller, id, &agent.hostname).await;
        match started {
            Ok(transfer) => {
                transfer::start(hub, transfer.clone());
                Ok(transfer)
            }
            Err(err) => {
                hub.transfer_ended(id);
                Err(err)
            }
        }
    }

    /// The transfer's record and its audit entry, in one transaction.
    async fn record(
        &self,
        hub: &FileHub,
        caller: &Caller,
        id: Uuid,
        hostname: &str,
    ) -> DomainResult<FileTransfer> {
        let domain = &hub.inner.domain;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let transfer = tx
            .create_file_transfer(
                &NewFileTransfer {
                    id,
                    org_id: caller.org_id,
                    agent_id: self.agent_id,
                    direction: self.direction,
                    path: self.path.clone(),
                    blake3: self.blob.as_ref().map(|b| b.blake3.clone()),
                    size: self.blob.as_ref().map(|b| b.size),
                    user_id: caller.user_id,
                    operator: truncate(caller.actor(), MAX_OPERATOR_LEN),
                    node_id: hub.inner.node_id.clone(),
                },
                now,
            )
            .await?;
        audit::record(
            &mut tx,
            caller,
            match self.direction {
                FileDirectionRow::Push => "file.push",
                FileDirectionRow::Pull => "file.pull",
            },
            Some(transfer_target(id)),
            json!({
                "agent_id": self.agent_id,
                "hostname": hostname,
                "path": self.path,
                "blake3": transfer.blake3,
                "size": transfer.size,
            }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(transfer)
    }
}

/// One transfer of the caller's organisation (`file:view`).
#[derive(Debug, Clone)]
pub struct GetFileTransfer {
    pub transfer_id: Uuid,
}

impl GetFileTransfer {
    pub async fn run(self, hub: &FileHub, caller: &Caller) -> DomainResult<FileTransfer> {
        caller.require(Permission::FileView)?;
        hub.inner
            .domain
            .store
            .file_transfer(caller.org_id, self.transfer_id)
            .await?
            .ok_or(DomainError::NotFound("file transfer"))
    }
}

/// Transfers of the caller's organisation (of one agent, if given), newest first (`file:view`).
#[derive(Debug, Clone, Default)]
pub struct ListFileTransfers {
    pub agent_id: Option<Uuid>,
    pub limit: Option<i64>,
}

impl ListFileTransfers {
    pub async fn run(self, hub: &FileHub, caller: &Caller) -> DomainResult<Vec<FileTransfer>> {
        caller.require(Permission::FileView)?;
        let limit = self.limit.unwrap_or(100).clamp(1, MAX_FILE_PAGE);
        Ok(hub
            .inner
            .domain
            .store
            .list_file_transfers(caller.org_id, self.agent_id, limit)
            .await?)
    }
}
