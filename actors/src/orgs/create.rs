//! Creating organisations, and which ones a caller can see.

use reap3r_store::{Org, Uuid};
use serde_json::json;

use super::org_target;
use crate::access::{Caller, Role};
use crate::error::{DomainError, DomainResult, required_text};
use crate::{Domain, audit};

/// Longest organisation name, in characters (the API schema says the same number).
pub const MAX_ORG_NAME_CHARS: usize = 200;

/// Creates an organisation, as a customer of `parent_org_id` when given.
#[derive(Debug, Clone)]
pub struct CreateOrg {
    pub name: String,
    pub parent_org_id: Option<Uuid>,
}

impl CreateOrg {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Org> {
        let name = required_text("name", &self.name, MAX_ORG_NAME_CHARS)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let org = tx.create_org(&name, self.parent_org_id, now).await?;
        audit::record(
            &mut tx,
            caller,
            "org.create",
            Some(org_target(org.id)),
            json!({ "name": org.name, "parent_org_id": org.parent_org_id }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(org)
    }
}

/// Organisations the caller can see, by name: all for super admins, otherwise their own, the
/// one acted in, and those they are assigned to.
pub async fn visible_orgs(domain: &Domain, caller: &Caller) -> DomainResult<Vec<Org>> {
    if caller.role == Role::SuperAdmin {
        return Ok(domain.store.list_orgs().await?);
    }
    let mut ids = vec![caller.home_org, caller.org_id];
    for a in domain
        .store
        .list_user_assignments(caller.account()?)
        .await?
    {
        ids.push(a.org_id);
    }
    ids.sort();
    ids.dedup();
    let mut orgs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(org) = domain.store.org(id).await? {
            orgs.push(org);
        }
    }
    orgs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(orgs)
}

/// One organisation the caller can see.
pub async fn get_org(domain: &Domain, caller: &Caller, id: Uuid) -> DomainResult<Org> {
    visible_orgs(domain, caller)
        .await?
        .into_iter()
        .find(|o| o.id == id)
        .ok_or(DomainError::NotFound("organisation"))
}
