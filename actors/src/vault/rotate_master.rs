//! `reap3r vault rotate-master-key`: a new master key becomes the primary and every sealed
//! value is moved under it while the server serves. With a key file, the CLI generates the key
//! and writes it first in the file (the old ones stay after it); with a key command, the
//! operator puts the new key first in its output beforehand. Serving nodes find the new key
//! when they meet a value sealed under it (they reload their source) and seal under whatever
//! the database names primary, read in the sealing transaction.

use serde_json::json;

use super::keys::MasterKey;
use super::reseal::{ResealReport, reseal_all};
use super::source::KeySource;
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeyRotation {
    pub from: Option<String>,
    pub to: String,
    pub report: ResealReport,
    /// Keys retired: nothing is sealed under them any more.
    pub retired: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RotateMasterKey {
    /// Drop retired keys from the key file afterwards (backups taken before the rotation then
    /// need the old key from a copy of the old file).
    pub drop_retired: bool,
}

impl RotateMasterKey {
    pub async fn run(self, domain: &Domain, actor: &str) -> DomainResult<MasterKeyRotation> {
        let keys = domain.vault.keys();
        let source = keys
            .source()
            .cloned()
            .ok_or_else(|| DomainError::invalid("this vault has no key source to rotate"))?;
        let before = domain.store.vault_master_keys().await?;
        let from = before.iter().find(|r| r.is_primary).map(|r| r.id.clone());
        let new = match &source {
            KeySource::File(_) => {
                let new = MasterKey::generate()?;
                let mut all = vec![new.clone()];
                all.extend(
                    source
                        .read()
                        .map_err(|e| DomainError::unavailable(e.to_string()))?,
                );
                source
                    .write_all(&all)
                    .map_err(|e| DomainError::unavailable(e.to_string()))?;
                new
            }
            KeySource::Command(_) => {
                let first = source
                    .read()
                    .map_err(|e| DomainError::unavailable(e.to_string()))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| DomainError::unavailable("the key command printed no key"))?;
                if Some(first.id()) == from.as_deref() {
                    return Err(DomainError::invalid(
                        "the key command's first key is already the primary: put the new key \
                         first in its output, then rotate",
                    ));
                }
                first
            }
        };
        keys.reload()?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.add_primary_master_key(new.id(), &new.check_text()?, now)
            .await?;
        audit::record_as(
            &mut tx,
            None,
            actor,
            "vault.master_key_rotate",
            Some(format!("master_key:{}", new.id())),
            json!({ "from": from, "to": new.id() }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        let report = reseal_all(domain, actor).await?;
        let mut retired = Vec::new();
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        for row in domain.store.vault_master_keys().await? {
            if !row.is_primary && row.retired_at.is_none() {
                tx.retire_master_key(&row.id, now).await?;
                retired.push(row.id);
            }
        }
        if !retired.is_empty() {
            audit::record_as(
                &mut tx,
                None,
                actor,
                "vault.master_key_retire",
                None,
                json!({ "retired": retired }),
                now,
            )
            .await?;
        }
        domain.commit(tx).await?;
        if self.drop_retired && matches!(source, KeySource::File(_)) {
            let kept: Vec<MasterKey> = source
                .read()
                .map_err(|e| DomainError::unavailable(e.to_string()))?
                .into_iter()
                .filter(|k| !retired.iter().any(|r| r == k.id()))
                .collect();
            source
                .write_all(&kept)
                .map_err(|e| DomainError::unavailable(e.to_string()))?;
        }
        Ok(MasterKeyRotation {
            from,
            to: new.id().to_owned(),
            report,
            retired,
        })
    }
}
