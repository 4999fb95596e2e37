//! Where the job ledger and the result outbox live, behind one small trait: the rules that use
//! them are in [`AgentCore`](super::AgentCore), once. The real agent keeps them in redb
//! (`jobs.redb`, `agent/src/jobs/ledger.rs`); the fleet simulator and the tests in memory
//! ([`MemoryStore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use reap3r_wire::{JobResult, VerifiedJob};

/// The ledger (every job id ever accepted) and the outbox (results until the server's ack).
pub trait JobStore {
    type Error: std::fmt::Display;

    /// Records `job` as accepted, in one atomic step with the check: `false` (and nothing
    /// written) if its id is in the ledger already.
    fn record(&mut self, job: &VerifiedJob, now_ms: u64) -> Result<bool, Self::Error>;

    /// Puts `result` in the outbox and marks its job finished, before it is sent.
    fn keep_result(&mut self, result: &JobResult) -> Result<(), Self::Error>;

    /// The result of `job_id` if it is still in the outbox.
    fn kept_result(&self, job_id: &[u8; 16]) -> Result<Option<JobResult>, Self::Error>;

    /// Drops an acknowledged result from the outbox; `true` if it was there. The id stays in
    /// the ledger.
    fn drop_result(&mut self, job_id: &[u8; 16]) -> Result<bool, Self::Error>;

    /// Every result not yet acknowledged.
    fn unacked(&self) -> Result<Vec<JobResult>, Self::Error>;
}

/// A ledger and outbox in memory, for simulated agents and tests: forgotten with the process.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    ledger: BTreeSet<[u8; 16]>,
    outbox: BTreeMap<[u8; 16], JobResult>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `job_id` was ever accepted.
    pub fn knows(&self, job_id: &[u8; 16]) -> bool {
        self.ledger.contains(job_id)
    }

    /// Results waiting for the server's ack.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }
}

impl JobStore for MemoryStore {
    type Error = Infallible;

    fn record(&mut self, job: &VerifiedJob, _now_ms: u64) -> Result<bool, Infallible> {
        Ok(self.ledger.insert(job.job_id))
    }

    fn keep_result(&mut self, result: &JobResult) -> Result<(), Infallible> {
        self.ledger.insert(result.job_id);
        self.outbox.insert(result.job_id, result.clone());
        Ok(())
    }

    fn kept_result(&self, job_id: &[u8; 16]) -> Result<Option<JobResult>, Infallible> {
        Ok(self.outbox.get(job_id).cloned())
    }

    fn drop_result(&mut self, job_id: &[u8; 16]) -> Result<bool, Infallible> {
        Ok(self.outbox.remove(job_id).is_some())
    }

    fn unacked(&self) -> Result<Vec<JobResult>, Infallible> {
        Ok(self.outbox.values().cloned().collect())
    }
}
