//! Opening the vault at start: the master key must be the one the database was sealed with.
//! A fresh database gets the default key file created; a sealed database whose key is missing
//! or wrong is an error that names the key id it needs — nothing is created or overwritten.

use reap3r_store::Store;

use super::keys::{Keyring, MasterKey};
use super::source::{KeySource, KeySourceError};

#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error(transparent)]
    Source(#[from] KeySourceError),
    #[error(
        "the database is sealed with master key {needed}, but {source_name} does not exist; \
         restore it from its backup (docs/SECURITY.md) or point REAP3R_MASTER_KEY_FILE at it"
    )]
    Missing { needed: String, source_name: String },
    #[error(
        "the database is sealed with master key {needed}, which {source_name} does not hold \
         (it holds {held}); this is the wrong master key"
    )]
    Wrong {
        needed: String,
        source_name: String,
        held: String,
    },
    #[error(
        "master key {0} does not open its check value in the database; the key or the database is damaged"
    )]
    CheckFailed(String),
    #[error("the master key check value cannot be made: {0}")]
    Seal(String),
    #[error("the database could not be read: {0}")]
    Store(#[from] reap3r_store::StoreError),
}

/// Loads the master keys from `source` and checks them against the database (`Missing`,
/// `Wrong`); creates the default key file only for a database that holds no sealed value.
/// `now_ms` stamps a key first recorded.
pub async fn unlock(store: &Store, source: KeySource, now_ms: i64) -> Result<Keyring, UnlockError> {
    let rows = store.vault_master_keys().await?;
    let primary = rows.iter().find(|r| r.is_primary);
    if !source.exists() {
        if let Some(p) = primary {
            return Err(UnlockError::Missing {
                needed: p.id.clone(),
                source_name: source.describe(),
            });
        }
        source.create()?;
    }
    let keys = source.read()?;
    if let Some(primary) = primary {
        let Some(key) = keys.iter().find(|k| k.id() == primary.id) else {
            return Err(UnlockError::Wrong {
                needed: primary.id.clone(),
                source_name: source.describe(),
                held: ids(&keys),
            });
        };
        if !key.matches_check(&primary.check_sealed) {
            return Err(UnlockError::CheckFailed(primary.id.clone()));
        }
    }
    for row in rows.iter().filter(|r| r.retired_at.is_none()) {
        if let Some(key) = keys.iter().find(|k| k.id() == row.id)
            && !key.matches_check(&row.check_sealed)
        {
            return Err(UnlockError::CheckFailed(row.id.clone()));
        }
    }
    if primary.is_none() {
        // A fresh database (or one from before the vault) is bound to this key now, so that a
        // later start with another key is refused rather than sealing under a second one.
        let key = keys
            .first()
            .ok_or_else(|| KeySourceError::Empty(source.describe()))?;
        let check = key
            .check_text()
            .map_err(|e| UnlockError::Seal(e.to_string()))?;
        let mut tx = store.begin().await?;
        tx.add_primary_master_key(key.id(), &check, now_ms).await?;
        tx.commit().await?;
    }
    Ok(Keyring::from_source(source, keys))
}

fn ids(keys: &[MasterKey]) -> String {
    keys.iter()
        .map(MasterKey::id)
        .collect::<Vec<_>>()
        .join(", ")
}
