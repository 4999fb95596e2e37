//! The audit trail of operations: every operation appends its record to the BLAKE3 hash chain in
//! the same transaction as its change ([`record`], [`record_as`]); operators read it filtered
//! ([`ListAudit`]) and verify the chain ([`verify_chain`]).

mod read;
mod record;

pub use read::{DEFAULT_AUDIT_PAGE, ListAudit, verify_chain};
pub use record::{record, record_as};
