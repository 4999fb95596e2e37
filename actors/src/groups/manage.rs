//! Creating, reading, changing and deleting sites, companies, folders and tags.

use reap3r_store::{Group, GroupKind, GroupUpdate, NewGroup, Uuid};
use serde_json::json;

use super::{MAX_GROUP_NAME_CHARS, group_target};
use crate::access::Caller;
use crate::error::{DomainError, DomainResult, optional_text, required_text};
use crate::{Domain, audit};

/// Longest group description, in characters (the API schema says the same number).
pub const MAX_GROUP_DESCRIPTION_CHARS: usize = 2000;

/// The caller's organisation's groups of one kind, by name.
pub async fn list_groups(
    domain: &Domain,
    caller: &Caller,
    kind: GroupKind,
) -> DomainResult<Vec<Group>> {
    Ok(domain.store.list_groups(kind, caller.org_id).await?)
}

/// One group of the caller's organisation.
pub async fn get_group(
    domain: &Domain,
    caller: &Caller,
    kind: GroupKind,
    id: Uuid,
) -> DomainResult<Group> {
    domain
        .store
        .group(kind, caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound(kind.as_str()))
}

/// The tags of an agent of the caller's organisation, by name.
pub async fn agent_tags(
    domain: &Domain,
    caller: &Caller,
    agent_id: Uuid,
) -> DomainResult<Vec<Group>> {
    Ok(domain.store.agent_tags(caller.org_id, agent_id).await?)
}

/// Creates a group; folders may sit inside another folder of the same organisation.
#[derive(Debug, Clone)]
pub struct CreateGroup {
    pub kind: GroupKind,
    pub name: String,
    pub description: Option<String>,
    /// Parent folder (folders only).
    pub parent_id: Option<Uuid>,
}

impl CreateGroup {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Group> {
        let new = NewGroup {
            name: required_text("name", &self.name, MAX_GROUP_NAME_CHARS)?,
            description: optional_text(
                "description",
                self.description.as_deref(),
                MAX_GROUP_DESCRIPTION_CHARS,
            )?,
            parent_id: self.parent_id,
        };
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let group = tx.create_group(self.kind, caller.org_id, &new, now).await?;
        audit::record(
            &mut tx,
            caller,
            &format!("{}.create", self.kind.as_str()),
            Some(group_target(self.kind, group.id)),
            json!({ "name": group.name }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(group)
    }
}

/// Renames, describes or (folders) moves a group. `None` leaves a field as it is; an empty
/// description clears it.
#[derive(Debug, Clone)]
pub struct UpdateGroup {
    pub kind: GroupKind,
    pub id: Uuid,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Move a folder under another folder.
    pub parent_id: Option<Uuid>,
    /// Move a folder to the top level.
    pub clear_parent: bool,
}

impl UpdateGroup {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<Group> {
        let parent_id = match (self.parent_id, self.clear_parent) {
            (Some(_), true) => {
                return Err(DomainError::invalid(
                    "give parent_id or clear_parent, not both",
                ));
            }
            (Some(p), false) => Some(Some(p)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        let update = GroupUpdate {
            name: self
                .name
                .as_deref()
                .map(|n| required_text("name", n, MAX_GROUP_NAME_CHARS))
                .transpose()?,
            description: self
                .description
                .as_deref()
                .map(|d| optional_text("description", Some(d), MAX_GROUP_DESCRIPTION_CHARS))
                .transpose()?,
            parent_id,
        };
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let group = tx
            .update_group(self.kind, caller.org_id, self.id, &update, now)
            .await
            .map_err(|e| DomainError::from_store(e, self.kind.as_str()))?;
        audit::record(
            &mut tx,
            caller,
            &format!("{}.update", self.kind.as_str()),
            Some(group_target(self.kind, self.id)),
            json!({ "name": group.name }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(group)
    }
}

/// Deletes a group: agents filed under it become unfiled, a tag leaves every agent; a folder
/// with sub-folders is a `Conflict`.
#[derive(Debug, Clone, Copy)]
pub struct DeleteGroup {
    pub kind: GroupKind,
    pub id: Uuid,
}

impl DeleteGroup {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.delete_group(self.kind, caller.org_id, self.id)
            .await
            .map_err(|e| DomainError::from_store(e, self.kind.as_str()))?;
        audit::record(
            &mut tx,
            caller,
            &format!("{}.delete", self.kind.as_str()),
            Some(group_target(self.kind, self.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}
