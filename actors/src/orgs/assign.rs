//! MSSP assignments: a provider organisation's users acting in its customer organisations with
//! an assigned role.

use reap3r_store::{OrgAssignment, Uuid};
use serde_json::json;

use super::{managed_customer, org_target};
use crate::access::{Caller, Role};
use crate::error::{DomainError, DomainResult};
use crate::{Domain, audit};

/// The users assigned to a customer organisation the caller manages.
pub async fn list_assignments(
    domain: &Domain,
    caller: &Caller,
    org_id: Uuid,
) -> DomainResult<Vec<OrgAssignment>> {
    let org = managed_customer(domain, caller, org_id).await?;
    Ok(domain.store.list_org_assignments(org.id).await?)
}

/// Gives a user of the caller's organisation a role in a customer organisation (replacing an
/// earlier one). The role is never above what the caller may grant, and never super admin.
#[derive(Debug, Clone, Copy)]
pub struct AssignToOrg {
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
}

impl AssignToOrg {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<OrgAssignment> {
        let org = managed_customer(domain, caller, self.org_id).await?;
        let role = self.role;
        if !caller.role.may_grant(role) || role == Role::SuperAdmin {
            return Err(DomainError::forbidden(format!(
                "cannot assign the role {role}"
            )));
        }
        domain
            .store
            .user_in_org(caller.org_id, self.user_id)
            .await?
            .ok_or(DomainError::NotFound("user"))?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let assignment = tx
            .assign_user_to_org(self.user_id, org.id, role.as_str(), now)
            .await?;
        audit::record(
            &mut tx,
            caller,
            "org.assign",
            Some(org_target(org.id)),
            json!({ "user_id": self.user_id, "role": role.as_str() }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(assignment)
    }
}

/// Removes a user's assignment to a customer organisation the caller manages.
#[derive(Debug, Clone, Copy)]
pub struct UnassignFromOrg {
    pub org_id: Uuid,
    pub user_id: Uuid,
}

impl UnassignFromOrg {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let org = managed_customer(domain, caller, self.org_id).await?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.unassign_user_from_org(self.user_id, org.id)
            .await
            .map_err(|e| DomainError::from_store(e, "resource"))?;
        audit::record(
            &mut tx,
            caller,
            "org.unassign",
            Some(org_target(org.id)),
            json!({ "user_id": self.user_id }),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}
