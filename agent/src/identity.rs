//! The agent's identity and pins, kept in a redb file (0600) in its data dir.

use std::path::{Path, PathBuf};

use reap3r_wire::{AgentConfig, SigningKey, VerifyingKey};
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::AgentError;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");
const FILE: &str = "agent.redb";

/// Who this agent is and which server it trusts.
#[derive(Clone)]
pub struct AgentIdentity {
    pub agent_id: [u8; 16],
    pub signing_key: SigningKey,
    pub server: String,
    pub fingerprint: [u8; 32],
    pub server_key: VerifyingKey,
    pub config: AgentConfig,
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
            let entries: [(&str, &[u8]); 7] = [
                ("agent_id", &id.agent_id),
                ("signing_key", id.signing_key.as_bytes()),
                ("server", id.server.as_bytes()),
                ("fingerprint", &id.fingerprint),
                ("server_key", id.server_key.as_bytes()),
                ("heartbeat_interval_s", &hb),
                ("metrics_interval_s", &metrics),
            ];
            for (k, v) in entries {
                t.insert(k, v).map_err(store_err)?;
            }
        }
        tx.commit().map_err(store_err)
    }

    pub fn load(&self) -> Result<AgentIdentity, AgentError> {
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
        Ok(AgentIdentity {
            agent_id,
            signing_key: SigningKey::from_bytes(&fixed("signing_key")?),
            server: String::from_utf8(get("server")?).map_err(store_err)?,
            fingerprint: fixed("fingerprint")?,
            server_key: VerifyingKey::from_bytes(&fixed("server_key")?).map_err(store_err)?,
            config: AgentConfig {
                heartbeat_interval_s: u32_of("heartbeat_interval_s")?,
                metrics_interval_s: u32_of("metrics_interval_s")?,
            }
            .clamped(),
        })
    }
}
