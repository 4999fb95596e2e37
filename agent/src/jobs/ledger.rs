//! The job ledger and result outbox, in `jobs.redb` (0600) in the data dir.
//!
//! - `ledger`: job id → [`Entry`]. Written (and committed) before a job starts, so an id that is
//!   in it is never run again, whatever is dispatched or replayed.
//! - `outbox`: job id → postcard [`JobResult`]. Written before the result is sent; removed when
//!   the server acknowledges it.

use std::path::Path;
use std::sync::Arc;

use reap3r_wire::{JobResult, VerifiedJob};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::AgentError;
use crate::protocol::JobStore;

const LEDGER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ledger");
const OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox");
pub(crate) const FILE: &str = "jobs.redb";

/// Format version prefixed to every ledger entry.
const ENTRY_VERSION: u8 = 1;

/// A finished, acknowledged entry is forgotten this long after its grant expired: by then any
/// dispatch of it is refused as expired anyway, so it cannot run twice.
const PRUNE_AFTER_EXPIRY_MS: u64 = 24 * 3600 * 1000;

/// The process a running job started, enough to find (and kill) its group after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    pub pid: u32,
    pub pgid: u32,
    /// Start time of the group leader in clock ticks since boot (`/proc/<pid>/stat` field 22),
    /// so a reused pid is not mistaken for the job.
    pub start_ticks: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum JobState {
    Accepted,
    Running {
        started_at_ms: u64,
        process: Option<ProcessRecord>,
    },
    Finished {
        finished_at_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub job_type: String,
    pub accepted_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    /// The kernel's boot id when the job was accepted.
    pub boot_id: String,
    pub state: JobState,
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_VERSION];
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&ENTRY_VERSION, rest)) => postcard::from_bytes(rest).ok(),
            _ => None,
        }
    }
}

fn store_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Store(format!("job ledger: {e}"))
}

pub(crate) struct Ledger {
    db: Database,
}

impl Ledger {
    pub(crate) fn open(data_dir: &Path) -> Result<Self, AgentError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(FILE);
        {
            // Created private before redb writes anything into it.
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let db = Database::create(&path).map_err(store_err)?;
        let tx = db.begin_write().map_err(store_err)?;
        tx.open_table(LEDGER).map_err(store_err)?;
        tx.open_table(OUTBOX).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(Self { db })
    }

    /// Records a new job as accepted; `false` if the id is already in the ledger.
    pub(crate) fn accept(&self, job_id: &[u8; 16], entry: &Entry) -> Result<bool, AgentError> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let fresh = {
            let mut t = tx.open_table(LEDGER).map_err(store_err)?;
            if t.get(job_id.as_slice()).map_err(store_err)?.is_some() {
                false
            } else {
                t.insert(job_id.as_slice(), entry.encode().as_slice())
                    .map_err(store_err)?;
                true
            }
        };
        if fresh {
            tx.commit().map_err(store_err)?;
        } else {
            tx.abort().map_err(store_err)?;
        }
        Ok(fresh)
    }

    #[cfg(test)]
    pub(crate) fn get(&self, job_id: &[u8; 16]) -> Result<Option<Entry>, AgentError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(LEDGER).map_err(store_err)?;
        let value = t.get(job_id.as_slice()).map_err(store_err)?;
        Ok(value.and_then(|v| Entry::decode(v.value())))
    }

    /// Changes the state of a job already in the ledger.
    pub(crate) fn set_state(&self, job_id: &[u8; 16], state: JobState) -> Result<(), AgentError> {
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut t = tx.open_table(LEDGER).map_err(store_err)?;
            let entry = t
                .get(job_id.as_slice())
                .map_err(store_err)?
                .and_then(|v| Entry::decode(v.value()));
            let Some(mut entry) = entry else {
                return Err(AgentError::Store(format!(
                    "job ledger: {} is not recorded",
                    hex::encode(job_id)
                )));
            };
            entry.state = state;
            t.insert(job_id.as_slice(), entry.encode().as_slice())
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    /// Puts the result in the outbox and marks the job finished, in one transaction.
    pub(crate) fn finish(&self, result: &JobResult) -> Result<(), AgentError> {
        let key = result.job_id.as_slice();
        let bytes = postcard::to_allocvec(result).map_err(store_err)?;
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut outbox = tx.open_table(OUTBOX).map_err(store_err)?;
            outbox.insert(key, bytes.as_slice()).map_err(store_err)?;
            let mut t = tx.open_table(LEDGER).map_err(store_err)?;
            let old = t
                .get(key)
                .map_err(store_err)?
                .and_then(|v| Entry::decode(v.value()));
            let mut entry = old.unwrap_or_else(|| Entry {
                job_type: String::new(),
                accepted_at_ms: result.started_at_ms,
                expires_at_ms: None,
                boot_id: String::new(),
                state: JobState::Accepted,
            });
            entry.state = JobState::Finished {
                finished_at_ms: result.finished_at_ms,
            };
            t.insert(key, entry.encode().as_slice())
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    /// Drops an acknowledged result from the outbox; `true` if it was there.
    pub(crate) fn ack(&self, job_id: &[u8; 16]) -> Result<bool, AgentError> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let removed = {
            let mut outbox = tx.open_table(OUTBOX).map_err(store_err)?;
            outbox
                .remove(job_id.as_slice())
                .map_err(store_err)?
                .is_some()
        };
        tx.commit().map_err(store_err)?;
        Ok(removed)
    }

    pub(crate) fn outbox_get(&self, job_id: &[u8; 16]) -> Result<Option<JobResult>, AgentError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(OUTBOX).map_err(store_err)?;
        let value = t.get(job_id.as_slice()).map_err(store_err)?;
        Ok(value.and_then(|v| postcard::from_bytes(v.value()).ok()))
    }

    /// Every result not yet acknowledged (undecodable ones are skipped).
    pub(crate) fn outbox(&self) -> Result<Vec<JobResult>, AgentError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(OUTBOX).map_err(store_err)?;
        let mut results = Vec::new();
        for item in t.iter().map_err(store_err)? {
            let (_, v) = item.map_err(store_err)?;
            if let Ok(result) = postcard::from_bytes::<JobResult>(v.value()) {
                results.push(result);
            }
        }
        Ok(results)
    }

    /// Jobs accepted or running: after a restart these were interrupted.
    pub(crate) fn unfinished(&self) -> Result<Vec<([u8; 16], Entry)>, AgentError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(LEDGER).map_err(store_err)?;
        let mut jobs = Vec::new();
        for item in t.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let Ok(id) = <[u8; 16]>::try_from(k.value()) else {
                continue;
            };
            if let Some(entry) = Entry::decode(v.value())
                && !matches!(entry.state, JobState::Finished { .. })
            {
                jobs.push((id, entry));
            }
        }
        Ok(jobs)
    }

    /// Forgets finished, acknowledged jobs whose grants expired long ago; returns how many.
    pub(crate) fn prune(&self, now_ms: u64) -> Result<usize, AgentError> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let removed = {
            let outbox = tx.open_table(OUTBOX).map_err(store_err)?;
            let mut t = tx.open_table(LEDGER).map_err(store_err)?;
            let mut stale = Vec::new();
            for item in t.iter().map_err(store_err)? {
                let (k, v) = item.map_err(store_err)?;
                let Some(entry) = Entry::decode(v.value()) else {
                    continue;
                };
                let expired = entry
                    .expires_at_ms
                    .is_some_and(|exp| now_ms > exp.saturating_add(PRUNE_AFTER_EXPIRY_MS));
                if expired && matches!(entry.state, JobState::Finished { .. }) {
                    stale.push(k.value().to_vec());
                }
            }
            let mut removed = 0;
            for key in stale {
                if outbox.get(key.as_slice()).map_err(store_err)?.is_none() {
                    t.remove(key.as_slice()).map_err(store_err)?;
                    removed += 1;
                }
            }
            removed
        };
        tx.commit().map_err(store_err)?;
        Ok(removed)
    }
}

/// The redb ledger as the protocol core's [`JobStore`]: the rules are the core's, the
/// transactions are here.
pub(crate) struct LedgerStore {
    pub ledger: Arc<Ledger>,
    /// The kernel's boot id, recorded with each accepted job (see `recover`).
    pub boot_id: String,
}

impl JobStore for LedgerStore {
    type Error = AgentError;

    fn record(&mut self, job: &VerifiedJob, now_ms: u64) -> Result<bool, AgentError> {
        let entry = Entry {
            job_type: job.spec.payload.type_name().into(),
            accepted_at_ms: now_ms,
            expires_at_ms: job.grant.expires_at_ms,
            boot_id: self.boot_id.clone(),
            state: JobState::Accepted,
        };
        self.ledger.accept(&job.job_id, &entry)
    }

    fn keep_result(&mut self, result: &JobResult) -> Result<(), AgentError> {
        self.ledger.finish(result)
    }

    fn kept_result(&self, job_id: &[u8; 16]) -> Result<Option<JobResult>, AgentError> {
        self.ledger.outbox_get(job_id)
    }

    fn drop_result(&mut self, job_id: &[u8; 16]) -> Result<bool, AgentError> {
        self.ledger.ack(job_id)
    }

    fn unacked(&self) -> Result<Vec<JobResult>, AgentError> {
        self.ledger.outbox()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reap3r_wire::JobEnd;

    fn entry() -> Entry {
        Entry {
            job_type: "run_script".into(),
            accepted_at_ms: 1,
            expires_at_ms: Some(10),
            boot_id: "b".into(),
            state: JobState::Accepted,
        }
    }

    fn result(id: [u8; 16]) -> JobResult {
        JobResult {
            job_id: id,
            end: JobEnd::Succeeded,
            exit_code: Some(0),
            stdout: b"out".to_vec(),
            stderr: vec![],
            stdout_truncated: false,
            stderr_truncated: false,
            data: None,
            error: None,
            started_at_ms: 2,
            finished_at_ms: 3,
        }
    }

    #[test]
    fn file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let _ledger = Ledger::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_id_is_accepted_once_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = [7; 16];
        {
            let ledger = Ledger::open(dir.path()).unwrap();
            assert!(ledger.accept(&id, &entry()).unwrap());
            assert!(!ledger.accept(&id, &entry()).unwrap());
        }
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(!ledger.accept(&id, &entry()).unwrap());
        assert!(ledger.accept(&[8; 16], &entry()).unwrap());
        assert_eq!(ledger.get(&id).unwrap().unwrap().state, JobState::Accepted);
    }

    #[test]
    fn outbox_survives_reopening_and_ack_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let id = [1; 16];
        {
            let ledger = Ledger::open(dir.path()).unwrap();
            ledger.accept(&id, &entry()).unwrap();
            ledger
                .set_state(
                    &id,
                    JobState::Running {
                        started_at_ms: 2,
                        process: None,
                    },
                )
                .unwrap();
            assert_eq!(ledger.unfinished().unwrap().len(), 1);
            ledger.finish(&result(id)).unwrap();
        }
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(ledger.unfinished().unwrap().is_empty());
        assert_eq!(ledger.outbox().unwrap(), vec![result(id)]);
        assert_eq!(ledger.outbox_get(&id).unwrap(), Some(result(id)));
        assert_eq!(
            ledger.get(&id).unwrap().unwrap().state,
            JobState::Finished { finished_at_ms: 3 }
        );
        assert!(ledger.ack(&id).unwrap());
        assert!(!ledger.ack(&id).unwrap());
        drop(ledger);
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(ledger.outbox().unwrap().is_empty());
        // The id stays in the ledger after the ack.
        assert!(!ledger.accept(&id, &entry()).unwrap());
    }

    #[test]
    fn prune_forgets_only_acked_entries_long_expired() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (acked, unacked, open) = ([1; 16], [2; 16], [3; 16]);
        for id in [acked, unacked, open] {
            ledger.accept(&id, &entry()).unwrap();
        }
        ledger.finish(&result(acked)).unwrap();
        ledger.ack(&acked).unwrap();
        ledger.finish(&result(unacked)).unwrap();
        assert_eq!(ledger.prune(11).unwrap(), 0);
        assert_eq!(ledger.prune(10 + PRUNE_AFTER_EXPIRY_MS + 1).unwrap(), 1);
        assert!(ledger.get(&acked).unwrap().is_none());
        assert!(ledger.get(&unacked).unwrap().is_some());
        assert!(ledger.get(&open).unwrap().is_some());
    }
}
