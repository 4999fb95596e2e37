//! Adding and listing releases. A release is added from the server's command line (it needs
//! the release key's private half, which the API never holds); the build goes into the file
//! store under its BLAKE3, its manifest is signed, and the record and its audit entry commit in
//! one transaction.

use bytes::Bytes;
use futures::Stream;
use reap3r_store::{AgentRelease, Uuid};
use reap3r_wire::{AgentVersion, ReleaseManifest, SigningKey, is_label};
use serde_json::json;

use crate::access::{Caller, Permission};
use crate::error::{DomainError, DomainResult};
use crate::files::{BlobStore, PutError};
use crate::{Domain, audit};

/// Largest agent build.
pub const MAX_RELEASE_BYTES: u64 = 512 * 1024 * 1024;

/// The audit target of a release.
pub fn release_target(version: &str, platform: &str) -> String {
    format!("release:{version}/{platform}")
}

/// Stores a build as the release of `version` for `platform` (`update:release`: super admins
/// and the CLI), with its manifest signed by `release_key`.
#[derive(Debug, Clone)]
pub struct AddRelease {
    pub version: String,
    pub platform: String,
}

impl AddRelease {
    pub async fn run<S, E>(
        self,
        domain: &Domain,
        blobs: &BlobStore,
        release_key: &SigningKey,
        caller: &Caller,
        build: S,
    ) -> DomainResult<AgentRelease>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        caller.require(Permission::UpdateRelease)?;
        if AgentVersion::parse(&self.version).is_none() {
            return Err(DomainError::invalid(format!(
                "version {:?}: expected MAJOR.MINOR.PATCH",
                self.version
            )));
        }
        if !is_label(&self.platform) {
            return Err(DomainError::invalid(format!(
                "platform {:?}: expected <os>-<arch> in [a-z0-9_.-], e.g. linux-x86_64",
                self.platform
            )));
        }
        if domain
            .store
            .release(&self.version, &self.platform)
            .await?
            .is_some()
        {
            return Err(DomainError::conflict(format!(
                "release {} for {} exists",
                self.version, self.platform
            )));
        }
        let (blake3, size) = blobs
            .put(build, MAX_RELEASE_BYTES)
            .await
            .map_err(|e| match e {
                PutError::TooLarge(_) => DomainError::TooLarge(e.to_string()),
                PutError::Body(_) => DomainError::invalid(e.to_string()),
                PutError::Io(_) => DomainError::Unavailable(e.to_string()),
            })?;
        let now = domain.now_ms();
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&blake3, &mut hash)
            .map_err(|e| DomainError::Unavailable(format!("the file store's hash: {e}")))?;
        let (manifest, signature) = ReleaseManifest {
            version: self.version.clone(),
            platform: self.platform.clone(),
            size,
            blake3: hash,
            created_at_ms: now as u64,
        }
        .sign(release_key);
        let mut tx = domain.begin().await?;
        let release = tx
            .add_release(&AgentRelease {
                id: Uuid::new_v4(),
                version: self.version.clone(),
                platform: self.platform.clone(),
                size: size as i64,
                blake3: blake3.clone(),
                manifest,
                signature: signature.to_vec(),
                created_by: caller.actor(),
                created_at: now,
            })
            .await?;
        audit::record_as(
            &mut tx,
            None,
            &caller.actor(),
            "release.add",
            Some(release_target(&self.version, &self.platform)),
            json!({ "size": size, "blake3": blake3 }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(release)
    }
}

/// Every release, newest first (`update:view`).
#[derive(Debug, Clone, Default)]
pub struct ListReleases;

impl ListReleases {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<AgentRelease>> {
        caller.require(Permission::UpdateView)?;
        Ok(domain.store.list_releases().await?)
    }
}
