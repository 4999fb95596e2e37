//! A write transaction that carries its audit records: a domain operation writes its change and
//! its audit record through one [`Tx`] and both commit, or neither does.
//!
//! Store functions that change audited rows are methods of [`Tx`], so a change cannot be made
//! outside a transaction that could also hold its audit record. [`Tx::commit`] hands back the
//! audit records it committed, for the caller to publish only once they are durable.

use sqlx::{Any, AnyConnection, Transaction};

use crate::audit::AuditRecord;
use crate::error::Result;
use crate::{Backend, Store};

/// An open write transaction (SQLite: `BEGIN IMMEDIATE`, so it holds the write lock from the
/// start). Dropping it without [`Tx::commit`] rolls everything back, audit records included.
pub struct Tx {
    inner: Transaction<'static, Any>,
    backend: Backend,
    /// Audit records appended in this transaction, in order.
    pub(crate) audited: Vec<AuditRecord>,
    /// Whether this transaction already holds the cross-node audit lock.
    pub(crate) audit_locked: bool,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("backend", &self.backend)
            .field("audited", &self.audited.len())
            .finish_non_exhaustive()
    }
}

impl Tx {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }

    /// Commits the change and its audit records; returns the records, now durable.
    pub async fn commit(self) -> Result<Vec<AuditRecord>> {
        self.inner.commit().await?;
        Ok(self.audited)
    }

    /// Rolls back explicitly (dropping the transaction does the same, without waiting).
    pub async fn rollback(self) -> Result<()> {
        self.inner.rollback().await?;
        Ok(())
    }
}

impl Store {
    /// Starts a write transaction for a change and its audit record.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            inner: self.begin_write().await?,
            backend: self.backend(),
            audited: Vec::new(),
            audit_locked: false,
        })
    }
}
