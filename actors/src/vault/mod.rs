//! The vault: secrets kept for operators and for jobs, sealed under a master key that never
//! enters the database.
//!
//! Keys: a master key (KEK) from a key file or a command ([`source`]) seals every secret's own
//! data key (DEK) and the other stored secrets (TOTP, channel secrets) with an AAD naming the
//! row ([`keys`], [`columns`]); each version of a secret is AES-256-GCM under its DEK with the
//! AAD (org, secret, version) ([`data_key`]). At start [`unlock`] checks the key against the
//! database and [`reseal`] seals what is still plain; [`rotate_master`] moves everything to a
//! new key while the server serves.
//!
//! Secrets: operations in [`secrets`], [`reveal`] (permission, grant, reason, step-up),
//! [`grants`] (sharing), [`rotation`] (manual and by policy, passwords from [`generate`]),
//! [`access_log`]; who may do what is [`access`]; limits and kinds are in [`model`].
//! [`jobs`] seals secrets a job names to each target agent; [`use_secret`] runs a script with
//! one secret.

mod access;
mod access_log;
mod columns;
mod data_key;
mod generate;
mod grants;
mod jobs;
mod keys;
mod model;
mod reseal;
mod reveal;
mod rotate_master;
mod rotation;
mod secrets;
mod source;
mod strength;
mod unlock;
mod use_secret;

pub use access_log::{DEFAULT_ACCESS_LOG_PAGE, ReadAccessLog};
pub use columns::{Vault, column_aad};
pub use generate::{
    CharClass, DEFAULT_GENERATED_LENGTH, MAX_GENERATED_LENGTH, MIN_GENERATED_LENGTH,
    generate_password,
};
pub use grants::{GrantSubject, ListGrants, ShareSecret, UnshareSecret};
pub use jobs::{JobWithSecrets, SecretEnv, seal_for_job};
pub use keys::{Keyring, MasterKey, is_sealed};
pub use model::{
    DEFAULT_EXPIRING_DAYS, DEFAULT_SECRET_PAGE, MAX_EXPIRING_DAYS, MAX_GRANTS_PER_SECRET,
    MAX_REASON_CHARS, MAX_SECRET_NAME_CHARS, MAX_SECRET_NOTES_CHARS, MAX_SECRET_TAG_CHARS,
    MAX_SECRET_TAGS, MAX_SECRET_VALUE_BYTES, STEP_UP_WINDOW_MS, SecretKind, SecretValue,
    SecretView,
};
pub use reseal::{ResealReport, reseal_all};
pub use reveal::{RevealSecret, Revealed, step_up_required};
pub use rotate_master::{MasterKeyRotation, RotateMasterKey};
pub use rotation::{MAX_ROTATION_DAYS, ROTATION_ACTOR, RotateSecret, RotationPolicy, sweep};
pub use secrets::{
    CreateSecret, DeleteSecret, GetSecret, ListSecrets, ListVersions, UpdateSecret, vault_counts,
};
pub use source::{KeySource, KeySourceError, MAX_MASTER_KEYS};
pub use strength::WEAK_BELOW;
pub use unlock::{UnlockError, unlock};
pub use use_secret::UseSecret;
