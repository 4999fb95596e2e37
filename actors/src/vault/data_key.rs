//! A secret's data key (DEK): 256 random bits, sealed by the master key with the AAD (org,
//! secret). Each version's value is AES-256-GCM under the DEK with the AAD (org, secret,
//! version), so a version row copied to another secret or version does not open. A master key
//! rotation re-seals only the DEKs.

use reap3r_store::{SealedColumn, SecretRow, SecretVersionRow, Tx, Uuid};
use zeroize::Zeroizing;

use super::columns::Vault;
use super::keys::{aead_open, aead_seal, random};
use crate::error::{DomainError, DomainResult};

/// An opened data key.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn generate() -> DomainResult<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        random(key.as_mut_slice())?;
        Ok(Self(key))
    }

    /// The DEK sealed for the secret's row; returns it with the id of the master key used.
    pub async fn seal(
        &self,
        vault: &Vault,
        tx: &mut Tx,
        org_id: Uuid,
        secret_id: Uuid,
        now_ms: i64,
    ) -> DomainResult<(String, String)> {
        let key = vault.sealing_key(tx, now_ms).await?;
        let aad = super::columns::column_aad(SealedColumn::SecretDataKey, Some(org_id), secret_id);
        Ok((key.seal(&aad, self.0.as_slice())?, key.id().to_owned()))
    }

    /// Opens the DEK of a secret.
    pub fn open(vault: &Vault, secret: &SecretRow) -> DomainResult<Self> {
        let bytes = vault.open_column(
            SealedColumn::SecretDataKey,
            Some(secret.org_id),
            secret.id,
            &secret.dek_sealed,
        )?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| DomainError::unavailable("a secret's data key has the wrong length"))?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// A version's ciphertext (hex of nonce ‖ ciphertext ‖ tag).
    pub fn seal_value(
        &self,
        org_id: Uuid,
        secret_id: Uuid,
        version: i64,
        value: &[u8],
    ) -> DomainResult<String> {
        let sealed = aead_seal(&self.0, &version_aad(org_id, secret_id, version), value)?;
        Ok(hex::encode(sealed))
    }

    /// Opens a version's value.
    pub fn open_value(&self, version: &SecretVersionRow) -> DomainResult<Zeroizing<Vec<u8>>> {
        let bytes = hex::decode(&version.ciphertext)
            .map_err(|_| DomainError::unavailable("a secret version's ciphertext is not hex"))?;
        aead_open(
            &self.0,
            &version_aad(version.org_id, version.secret_id, version.version),
            &bytes,
        )
    }

    /// A keyed hash of a value (under a key derived from the DEK): tells versions apart in the
    /// audit chain without revealing anything a guesser could check offline.
    pub fn value_mac(&self, value: &[u8]) -> String {
        let key = blake3::derive_key("reap3r vault value mac v1", self.0.as_slice());
        blake3::keyed_hash(&key, value).to_hex().to_string()
    }
}

fn version_aad(org_id: Uuid, secret_id: Uuid, version: i64) -> Vec<u8> {
    format!("reap3r vault_secret_versions v1|{org_id}|{secret_id}|{version}").into_bytes()
}
