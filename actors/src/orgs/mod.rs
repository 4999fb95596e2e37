//! Organisations and the MSSP model: creating an organisation (optionally as a customer of a
//! provider), and assigning a provider organisation's users to its customers with a role.

mod assign;
mod create;

pub use assign::{AssignToOrg, UnassignFromOrg, list_assignments};
pub use create::{CreateOrg, MAX_ORG_NAME_CHARS, get_org, visible_orgs};

use reap3r_store::{Org, Uuid};

use crate::Domain;
use crate::access::{Caller, Role};
use crate::error::{DomainError, DomainResult};

/// How an organisation is named in the audit log.
pub fn org_target(id: Uuid) -> String {
    format!("org:{id}")
}

/// The customer organisation an assignment is about: super admins may manage any; others only
/// customers of the provider organisation they act in. Any other is `NotFound`.
async fn managed_customer(domain: &Domain, caller: &Caller, org_id: Uuid) -> DomainResult<Org> {
    let org = domain
        .store
        .org(org_id)
        .await?
        .ok_or(DomainError::NotFound("organisation"))?;
    if caller.role == Role::SuperAdmin || org.parent_org_id == Some(caller.org_id) {
        return Ok(org);
    }
    Err(DomainError::NotFound("organisation"))
}
