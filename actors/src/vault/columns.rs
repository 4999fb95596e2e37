//! Sealing the columns of other features (TOTP secrets, notification channel secrets, a
//! secret's data key) under the master key, with an AAD that names the table and the row.

use reap3r_store::{SealedColumn, Tx, Uuid};
use zeroize::Zeroizing;

use super::keys::{Keyring, MasterKey};
use crate::error::DomainResult;

/// The AAD of a sealed column value: the column, the org (where the table has one), the row.
pub fn column_aad(column: SealedColumn, org_id: Option<Uuid>, id: Uuid) -> Vec<u8> {
    let org = org_id.map(|o| o.to_string()).unwrap_or_default();
    format!("reap3r {} v1|{org}|{id}", column.as_str()).into_bytes()
}

/// The master keys as the domain uses them: seal under the database's primary, open with
/// whichever key a value names.
#[derive(Debug, Clone)]
pub struct Vault {
    keys: Keyring,
}

impl Vault {
    pub fn new(keys: Keyring) -> Self {
        Self { keys }
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// The key new seals use: the primary the database names (read in `tx`, so a rotation that
    /// committed first is seen), or, on a database that names none yet, this node's first key,
    /// recorded as the primary in the same transaction.
    pub async fn sealing_key(&self, tx: &mut Tx, now_ms: i64) -> DomainResult<MasterKey> {
        match tx.primary_master_key().await? {
            Some(id) => self.keys.key(&id),
            None => {
                let key = self.keys.first()?;
                tx.add_primary_master_key(key.id(), &key.check_text()?, now_ms)
                    .await?;
                Ok(key)
            }
        }
    }

    /// Seals a column value of row `id` inside the transaction that writes it.
    pub async fn seal_column(
        &self,
        tx: &mut Tx,
        column: SealedColumn,
        org_id: Option<Uuid>,
        id: Uuid,
        plaintext: &[u8],
        now_ms: i64,
    ) -> DomainResult<String> {
        let key = self.sealing_key(tx, now_ms).await?;
        key.seal(&column_aad(column, org_id, id), plaintext)
    }

    /// Opens a column value of row `id`.
    pub fn open_column(
        &self,
        column: SealedColumn,
        org_id: Option<Uuid>,
        id: Uuid,
        sealed: &str,
    ) -> DomainResult<Zeroizing<Vec<u8>>> {
        self.keys.open(&column_aad(column, org_id, id), sealed)
    }

    /// Opens a column value that holds text.
    pub fn open_column_text(
        &self,
        column: SealedColumn,
        org_id: Option<Uuid>,
        id: Uuid,
        sealed: &str,
    ) -> DomainResult<Zeroizing<String>> {
        self.keys.open_text(&column_aad(column, org_id, id), sealed)
    }
}
