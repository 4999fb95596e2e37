//! The vault's rows: master key checks, secrets and their sealed versions, grants, the access
//! log, and the sealed columns of other tables a master key rotation re-seals. Everything here
//! is ciphertext or metadata: sealing and opening happen in the domain (`actors/src/vault`),
//! which holds the master key; the store never sees a key or a value.

mod access_log;
mod grants;
mod master_keys;
mod sealed_columns;
mod secrets;

pub use access_log::{MAX_ACCESS_LOG_PAGE, NewSecretAccess, SecretAccess};
pub use grants::{GrantFlags, NewSecretGrant, SecretGrant};
pub use master_keys::MasterKeyRow;
pub use sealed_columns::{SealedColumn, SealedRow};
pub use secrets::{
    MAX_SECRET_PAGE, NewSecret, NewSecretVersion, RotationPolicyRow, SecretFilter,
    SecretMetaUpdate, SecretRow, SecretVersionRow, VaultCounts, Viewer,
};
