//! The agent's identity and pins, kept in a redb file (0600) in its data dir: its id, its
//! Ed25519 signing key, its X25519 sealing key (for secrets sealed to it), the server it talks
//! to and the pins, and the config.

use std::path::{Path, PathBuf};

use reap3r_wire::{AgentConfig, SealingSecret, SigningKey, VerifyingKey};
use redb::{Database, ReadableDatabase, TableDefinition};
use tracing::info;

use crate::AgentError;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");
const FILE: &str = "agent.redb";

/// Who this agent is and which server it trusts.
#[derive(Clone)]
pub struct AgentIdentity {
    pub agent_id: [u8; 16],
    pub signing_key: SigningKey,
    /// The X25519 key secrets are sealed to; its public half goes in every `Hello`.
    pub sealing: SealingSecret,
    pub server: String,
    pub fingerprint: [u8; 32],
    pub server_key: VerifyingKey,
    pub config: AgentConfig,
    /// The key agent releases are signed with, pinned from the first server-signed welcome
    /// that carried one ([`pin_release_key`]).
    pub release_key: Option<VerifyingKey>,
}

/// What a welcome's release key does to the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleasePin {
    /// None was pinned: this one is now (save the identity).
    Pinned(VerifyingKey),
    /// The same key, or none offered: nothing changes.
    Kept,
    /// Another key than the pinned one: refused, the pinned one stays.
    Refused,
}

/// The pinning rule: the first key a (server-signed) welcome offers is pinned; a different one
/// later is refused, so a server key used to sign welcomes cannot swap the release key of
/// agents that already pinned one. Bytes that are not a key are refused.
pub fn pin_release_key(pinned: Option<&VerifyingKey>, offered: Option<[u8; 32]>) -> ReleasePin {
    match (pinned, offered) {
        (_, None) => ReleasePin::Kept,
        (Some(pinned), Some(offered)) if pinned.as_bytes() == &offered => ReleasePin::Kept,
        (Some(_), Some(_)) => ReleasePin::Refused,
        (None, Some(offered)) => match VerifyingKey::from_bytes(&offered) {
            Ok(key) => ReleasePin::Pinned(key),
            Err(_) => ReleasePin::Refused,
        },
    }
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("agent_id", &hex::encode(self.agent_id))
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

pub struct IdentityStore {
    db: Database,
    path: PathBuf,
}

fn store_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Store(e.to_string())
}

/// A fresh sealing key: 32 bytes from the operating system's generator (any 32 bytes are an
/// X25519 key once clamped).
pub fn new_sealing_key() -> Result<SealingSecret, AgentError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|e| AgentError::Argument(format!("no randomness: {e}")))?;
    SealingSecret::from_bytes(&seed).map_err(|e| AgentError::Store(e.to_string()))
}

impl IdentityStore {
    pub fn open(data_dir: &Path) -> Result<Self, AgentError> {
        std::fs::create_dir_all(data_dir)?;
        #[cfg(unix)]
        {
            // The directory is private before the key file is created in it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let path = data_dir.join(FILE);
        let db = Database::create(&path).map_err(store_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(Self { db, path })
    }

    pub fn save(&self, id: &AgentIdentity) -> Result<(), AgentError> {
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut t = tx.open_table(TABLE).map_err(store_err)?;
            let hb = id.config.heartbeat_interval_s.to_be_bytes();
            let metrics = id.config.metrics_interval_s.to_be_bytes();
            let sealing = id.sealing.to_bytes();
            let release = id.release_key.map(|k| k.to_bytes());
            let mut entries: Vec<(&str, &[u8])> = vec![
                ("agent_id", &id.agent_id),
                ("signing_key", id.signing_key.as_bytes()),
                ("sealing_key", sealing.as_slice()),
                ("server", id.server.as_bytes()),
                ("fingerprint", &id.fingerprint),
                ("server_key", id.server_key.as_bytes()),
                ("heartbeat_interval_s", &hb),
                ("metrics_interval_s", &metrics),
            ];
            if let Some(release) = &release {
                entries.push(("release_key", release));
            }
            for (k, v) in entries {
                t.insert(k, v).map_err(store_err)?;
            }
        }
        tx.commit().map_err(store_err)
    }

    /// Loads the identity. An agent enrolled before sealing keys existed has none: it gets one
    /// now, saved before it is used.
    pub fn load(&self) -> Result<AgentIdentity, AgentError> {
        let (identity, generated) = self.read()?;
        if generated {
            self.save(&identity)?;
            info!(
                public = %hex::encode(identity.sealing.public()),
                "made a sealing key for this agent"
            );
        }
        Ok(identity)
    }

    /// The identity as stored, and whether its sealing key had to be made.
    fn read(&self) -> Result<(AgentIdentity, bool), AgentError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(AgentError::NotEnrolled(self.path.display().to_string()));
            }
            Err(e) => return Err(store_err(e)),
        };
        let get = |k: &str| -> Result<Vec<u8>, AgentError> {
            t.get(k)
                .map_err(store_err)?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| AgentError::NotEnrolled(self.path.display().to_string()))
        };
        let fixed = |k: &str| -> Result<[u8; 32], AgentError> {
            get(k)?
                .try_into()
                .map_err(|_| AgentError::Store(format!("{k} is corrupt")))
        };
        let u32_of = |k: &str| -> Result<u32, AgentError> {
            Ok(u32::from_be_bytes(get(k)?.try_into().map_err(|_| {
                AgentError::Store(format!("{k} is corrupt"))
            })?))
        };
        let agent_id: [u8; 16] = get("agent_id")?
            .try_into()
            .map_err(|_| AgentError::Store("agent_id is corrupt".into()))?;
        let stored_sealing = t
            .get("sealing_key")
            .map_err(store_err)?
            .map(|v| zeroize::Zeroizing::new(v.value().to_vec()));
        let (sealing, generated) = match stored_sealing {
            Some(bytes) => {
                let bytes: &[u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| AgentError::Store("sealing_key is corrupt".into()))?;
                let key = SealingSecret::from_bytes(bytes)
                    .map_err(|_| AgentError::Store("sealing_key is corrupt".into()))?;
                (key, false)
            }
            None => (new_sealing_key()?, true),
        };
        let identity = AgentIdentity {
            agent_id,
            signing_key: SigningKey::from_bytes(&fixed("signing_key")?),
            sealing,
            server: String::from_utf8(get("server")?).map_err(store_err)?,
            fingerprint: fixed("fingerprint")?,
            server_key: VerifyingKey::from_bytes(&fixed("server_key")?).map_err(store_err)?,
            config: AgentConfig {
                heartbeat_interval_s: u32_of("heartbeat_interval_s")?,
                metrics_interval_s: u32_of("metrics_interval_s")?,
            }
            .clamped(),
            release_key: match t.get("release_key").map_err(store_err)? {
                None => None,
                Some(v) => {
                    let bytes: [u8; 32] = v
                        .value()
                        .try_into()
                        .map_err(|_| AgentError::Store("release_key is corrupt".into()))?;
                    Some(VerifyingKey::from_bytes(&bytes).map_err(store_err)?)
                }
            },
        };
        Ok((identity, generated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> AgentIdentity {
        AgentIdentity {
            agent_id: [1; 16],
            signing_key: SigningKey::from_bytes(&[2; 32]),
            sealing: SealingSecret::from_bytes(&[3; 32]).unwrap(),
            server: "127.0.0.1:4433".into(),
            fingerprint: [4; 32],
            server_key: SigningKey::from_bytes(&[5; 32]).verifying_key(),
            config: AgentConfig::default(),
            release_key: None,
        }
    }

    #[test]
    fn the_sealing_key_is_kept_with_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(dir.path()).unwrap();
        store.save(&identity()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.sealing.public(), identity().sealing.public());
        assert_eq!(*loaded.sealing.to_bytes(), *identity().sealing.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_identity_from_before_sealing_keys_gets_one_at_its_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(dir.path()).unwrap();
        store.save(&identity()).unwrap();
        // As an agent enrolled before this version left it: no sealing key.
        let tx = store.db.begin_write().unwrap();
        tx.open_table(TABLE).unwrap().remove("sealing_key").unwrap();
        tx.commit().unwrap();

        let upgraded = store.load().unwrap();
        assert_ne!(upgraded.sealing.public(), identity().sealing.public());
        assert_eq!(upgraded.agent_id, [1; 16]);
        // Saved at once: the next start has the same key.
        drop(store);
        let again = IdentityStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(again.sealing.public(), upgraded.sealing.public());
    }

    #[test]
    fn the_first_release_key_offered_is_pinned_and_another_is_refused() {
        let a = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let b = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert_eq!(pin_release_key(None, None), ReleasePin::Kept);
        assert_eq!(
            pin_release_key(None, Some(a.to_bytes())),
            ReleasePin::Pinned(a)
        );
        assert_eq!(
            pin_release_key(Some(&a), Some(a.to_bytes())),
            ReleasePin::Kept
        );
        assert_eq!(
            pin_release_key(Some(&a), Some(b.to_bytes())),
            ReleasePin::Refused
        );
        assert_eq!(pin_release_key(Some(&a), None), ReleasePin::Kept);
        // And it is kept with the identity.
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(dir.path()).unwrap();
        let mut pinned = identity();
        pinned.release_key = Some(a);
        store.save(&pinned).unwrap();
        assert_eq!(store.load().unwrap().release_key, Some(a));
    }
}
