//! Reading a secret's access log: its owner and org admins (who manage it) only, since it says
//! what everyone else did with it.

use reap3r_store::{SecretAccess, Uuid};

use super::access;
use crate::Domain;
use crate::access::{Caller, Permission};
use crate::error::{DomainError, DomainResult};

/// Default page of the access log.
pub const DEFAULT_ACCESS_LOG_PAGE: i64 = 100;

#[derive(Debug)]
pub struct ReadAccessLog {
    pub id: Uuid,
    /// The last entry id of the page before.
    pub before: Option<Uuid>,
    pub limit: Option<i64>,
}

impl ReadAccessLog {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Vec<SecretAccess>> {
        caller.require(Permission::SecretRead)?;
        let (_, _, manage) = access::load(domain, caller, self.id).await?;
        if !manage {
            return Err(DomainError::forbidden(
                "only the secret's owner or an org admin may read its access log",
            ));
        }
        Ok(domain
            .store
            .secret_access_log(
                caller.org_id,
                self.id,
                self.before,
                self.limit.unwrap_or(DEFAULT_ACCESS_LOG_PAGE),
            )
            .await?)
    }
}
