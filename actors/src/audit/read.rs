//! Reading the audit trail: filtered pages, newest first, and verification of the hash chain.

use reap3r_store::{AuditFilter, AuditRecord, ChainReport, MAX_AUDIT_PAGE};

use crate::Domain;
use crate::access::{Caller, Role};
use crate::error::{DomainError, DomainResult};

/// Records per page when the caller gives no limit.
pub const DEFAULT_AUDIT_PAGE: i64 = 100;

/// Audit records of the caller's organisation, newest first; exact matches on actor, action and
/// target, inclusive bounds on time, `before_seq` as the page cursor. With `all_orgs` (super
/// admins only), every organisation's records and installation-wide ones.
#[derive(Debug, Clone, Default)]
pub struct ListAudit {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_seq: Option<i64>,
    /// 1 to `MAX_AUDIT_PAGE`; [`DEFAULT_AUDIT_PAGE`] when absent.
    pub limit: Option<i64>,
    pub all_orgs: bool,
}

impl ListAudit {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<AuditRecord>> {
        let org = if self.all_orgs {
            if caller.role != Role::SuperAdmin {
                return Err(DomainError::forbidden(
                    "only super admins read every organisation",
                ));
            }
            None
        } else {
            Some(caller.org_id)
        };
        let limit = match self.limit {
            None => DEFAULT_AUDIT_PAGE,
            Some(n) if (1..=MAX_AUDIT_PAGE).contains(&n) => n,
            Some(_) => {
                return Err(DomainError::invalid(format!(
                    "limit must be between 1 and {MAX_AUDIT_PAGE}"
                )));
            }
        };
        let filter = AuditFilter {
            actor: self.actor,
            action: self.action,
            target: self.target,
            since: self.since,
            until: self.until,
            before_seq: self.before_seq,
            limit,
        };
        Ok(domain.store.list_audit_filtered(org, &filter).await?)
    }
}

/// Recomputes the hash chain over the whole log (every organisation) and reports the first
/// broken link.
pub async fn verify_chain(domain: &Domain) -> DomainResult<ChainReport> {
    Ok(domain.store.verify_audit_chain().await?)
}
