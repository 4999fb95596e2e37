//! Ways to group an organisation's agents: sites, companies, folders (which nest) and tags. All
//! four share one shape and one code path; the table is picked from [`GroupKind`], never from
//! caller text. An agent has at most one site, company and folder, and any number of tags.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::agents::Agent;
use crate::db::{
    bool_int, get_i64, get_opt_i64, get_opt_str, get_opt_uuid, get_str, get_uuid, uuid_text,
};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Backend, Store, Tx};

/// Longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 200;

/// Advisory-lock key that serialises folder re-parenting on PostgreSQL ("R3FOLDER"), so two
/// concurrent moves cannot together build a cycle that neither sees alone.
const FOLDER_LOCK_KEY: i64 = 0x5233_464f_4c44_4552;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    Site,
    Company,
    Folder,
    Tag,
}

impl GroupKind {
    pub const ALL: [GroupKind; 4] = [
        GroupKind::Site,
        GroupKind::Company,
        GroupKind::Folder,
        GroupKind::Tag,
    ];

    /// The table holding this kind (a constant, safe to format into SQL).
    pub fn table(self) -> &'static str {
        match self {
            GroupKind::Site => "sites",
            GroupKind::Company => "companies",
            GroupKind::Folder => "folders",
            GroupKind::Tag => "tags",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Site => "site",
            GroupKind::Company => "company",
            GroupKind::Folder => "folder",
            GroupKind::Tag => "tag",
        }
    }

    /// The `agents` column that files an agent under this kind; tags use `agent_tags` instead.
    pub fn agent_column(self) -> Option<&'static str> {
        match self {
            GroupKind::Site => Some("site_id"),
            GroupKind::Company => Some("company_id"),
            GroupKind::Folder => Some("folder_id"),
            GroupKind::Tag => None,
        }
    }
}

impl FromStr for GroupKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        GroupKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("unknown group kind {s:?}")))
    }
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: Uuid,
    pub org_id: Uuid,
    pub kind: GroupKind,
    pub name: String,
    pub description: Option<String>,
    /// The parent folder; always `None` for the other kinds.
    pub parent_id: Option<Uuid>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGroup {
    pub name: String,
    pub description: Option<String>,
    /// Only for folders.
    pub parent_id: Option<Uuid>,
}

/// Changes to a group; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub parent_id: Option<Option<Uuid>>,
}

/// Where [`Tx::move_agent`] files an agent: `None` leaves a field as it is, `Some(None)`
/// clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentPlacement {
    pub folder_id: Option<Option<Uuid>>,
    pub site_id: Option<Option<Uuid>>,
    pub company_id: Option<Option<Uuid>>,
}

const GROUP_COLS: &str = "id, org_id, name, description, parent_id, created_at, updated_at";

fn group_from_row(kind: GroupKind, row: &AnyRow) -> Result<Group> {
    Ok(Group {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        kind,
        name: get_str(row, "name")?,
        description: get_opt_str(row, "description")?,
        parent_id: get_opt_uuid(row, "parent_id")?,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_opt_i64(row, "updated_at")?,
    })
}

fn valid_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::Invalid("name is empty".into()));
    }
    if name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(StoreError::Invalid(format!(
            "name is longer than {MAX_GROUP_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

fn duplicate(kind: GroupKind) -> String {
    format!("a {kind} with this name already exists")
}

/// Whether a row with `id` exists in `kind`'s table and belongs to `org_id`.
async fn exists_in_org(
    conn: &mut AnyConnection,
    table: &'static str,
    org_id: Uuid,
    id: Uuid,
) -> Result<bool> {
    let sql = format!("SELECT 1 AS one FROM {table} WHERE id = $1 AND org_id = $2");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

async fn group_in(
    conn: &mut AnyConnection,
    kind: GroupKind,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<Group>> {
    let sql = format!(
        "SELECT {GROUP_COLS} FROM {} WHERE id = $1 AND org_id = $2",
        kind.table()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(|r| group_from_row(kind, r)).transpose()
}

/// Checks a parent for a group of `kind`: only folders have one, and it must be a folder of the
/// same organisation.
async fn check_parent(
    conn: &mut AnyConnection,
    kind: GroupKind,
    org_id: Uuid,
    parent_id: Uuid,
) -> Result<()> {
    if kind != GroupKind::Folder {
        return Err(StoreError::Invalid(format!(
            "a {kind} cannot have a parent"
        )));
    }
    if !exists_in_org(conn, GroupKind::Folder.table(), org_id, parent_id).await? {
        return Err(StoreError::Invalid("parent folder not found".into()));
    }
    Ok(())
}

impl Tx {
    /// Creates a group. `Invalid` for an empty or over-long name, a parent on anything but a
    /// folder, or a parent that is not a folder of the same organisation; `Conflict` if the
    /// organisation already has a group of this kind with that name.
    pub async fn create_group(
        &mut self,
        kind: GroupKind,
        org_id: Uuid,
        new: &NewGroup,
        now_ms: i64,
    ) -> Result<Group> {
        let name = valid_name(&new.name)?;
        if let Some(parent) = new.parent_id {
            check_parent(self.conn(), kind, org_id, parent).await?;
        }
        let sql = format!(
            "INSERT INTO {} (id, org_id, name, description, parent_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {GROUP_COLS}",
            kind.table()
        );
        let missing = if new.parent_id.is_some() {
            "parent folder not found"
        } else {
            "organisation does not exist"
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(Uuid::new_v4()))
            .bind(uuid_text(org_id))
            .bind(name)
            .bind(new.description.clone())
            .bind(new.parent_id.map(uuid_text))
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| map_constraint(e, &duplicate(kind), missing))?;
        let group = group_from_row(kind, &row)?;
        Ok(group)
    }

    /// Applies `update` and stamps `updated_at`. `NotFound` if the group is not `org_id`'s;
    /// otherwise the checks of [`Tx::create_group`], and `Invalid("folder cycle")` if a
    /// folder would become its own ancestor.
    pub async fn update_group(
        &mut self,
        kind: GroupKind,
        org_id: Uuid,
        id: Uuid,
        update: &GroupUpdate,
        now_ms: i64,
    ) -> Result<Group> {
        let name = update.name.as_deref().map(valid_name).transpose()?;
        if let Some(Some(parent)) = update.parent_id {
            if kind == GroupKind::Folder && self.backend() == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(FOLDER_LOCK_KEY)
                    .execute(&mut *self.conn())
                    .await?;
            }
            if group_in(self.conn(), kind, org_id, id).await?.is_none() {
                return Err(StoreError::NotFound);
            }
            if kind == GroupKind::Folder && parent == id {
                return Err(StoreError::Invalid("folder cycle".into()));
            }
            check_parent(self.conn(), kind, org_id, parent).await?;
            // Walk up from the new parent; reaching the folder itself means a cycle. UNION (not
            // UNION ALL) stops even on a corrupted, already cyclic tree.
            let cycle = sqlx::query(
                "WITH RECURSIVE ancestors (id, parent_id) AS ( \
                     SELECT id, parent_id FROM folders WHERE id = $1 \
                     UNION \
                     SELECT f.id, f.parent_id FROM folders f \
                     JOIN ancestors a ON f.id = a.parent_id \
                 ) SELECT 1 AS one FROM ancestors WHERE id = $2",
            )
            .bind(uuid_text(parent))
            .bind(uuid_text(id))
            .fetch_optional(&mut *self.conn())
            .await?
            .is_some();
            if cycle {
                return Err(StoreError::Invalid("folder cycle".into()));
            }
        }
        let sql = format!(
            "UPDATE {} SET name = COALESCE($3, name), \
             description = CASE WHEN $4 = 1 THEN $5 ELSE description END, \
             parent_id = CASE WHEN $6 = 1 THEN $7 ELSE parent_id END, updated_at = $8 \
             WHERE id = $1 AND org_id = $2 RETURNING {GROUP_COLS}",
            kind.table()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(name)
            .bind(bool_int(update.description.is_some()))
            .bind(update.description.clone().flatten())
            .bind(bool_int(update.parent_id.is_some()))
            .bind(update.parent_id.flatten().map(uuid_text))
            .bind(now_ms)
            .fetch_optional(&mut *self.conn())
            .await
            .map_err(|e| map_constraint(e, &duplicate(kind), "parent folder not found"))?
            .ok_or(StoreError::NotFound)?;
        let group = group_from_row(kind, &row)?;
        Ok(group)
    }

    /// Deletes a group of `org_id`; `NotFound` if it is not one of that organisation's,
    /// `Conflict` for a folder that still has sub-folders. Agents filed under it become unfiled
    /// and its tag links go (both by foreign key).
    pub async fn delete_group(&mut self, kind: GroupKind, org_id: Uuid, id: Uuid) -> Result<()> {
        if kind == GroupKind::Folder {
            let children = sqlx::query("SELECT 1 AS one FROM folders WHERE parent_id = $1 LIMIT 1")
                .bind(uuid_text(id))
                .fetch_optional(&mut *self.conn())
                .await?;
            if children.is_some() {
                return Err(StoreError::Conflict("folder has sub-folders".into()));
            }
        }
        let sql = format!("DELETE FROM {} WHERE id = $1 AND org_id = $2", kind.table());
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .execute(&mut *self.conn())
            .await
            // A sub-folder created concurrently trips the foreign key instead.
            .map_err(|e| match map_constraint(e, "", "") {
                StoreError::Invalid(_) => StoreError::Conflict("folder has sub-folders".into()),
                other => other,
            })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Tags an agent (idempotent). `NotFound` unless both the agent and the tag are `org_id`'s.
    pub async fn tag_agent(&mut self, org_id: Uuid, agent_id: Uuid, tag_id: Uuid) -> Result<()> {
        if !exists_in_org(self.conn(), "agents", org_id, agent_id).await?
            || !exists_in_org(self.conn(), GroupKind::Tag.table(), org_id, tag_id).await?
        {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO agent_tags (agent_id, tag_id) VALUES ($1, $2) \
             ON CONFLICT (agent_id, tag_id) DO NOTHING",
        )
        .bind(uuid_text(agent_id))
        .bind(uuid_text(tag_id))
        .execute(&mut *self.conn())
        .await
        .map_err(|e| match map_constraint(e, "", "") {
            // Deleted concurrently.
            StoreError::Invalid(_) => StoreError::NotFound,
            other => other,
        })?;
        Ok(())
    }

    /// Removes a tag from an agent (idempotent). `NotFound` unless both the agent and the tag
    /// are `org_id`'s.
    pub async fn untag_agent(&mut self, org_id: Uuid, agent_id: Uuid, tag_id: Uuid) -> Result<()> {
        if !exists_in_org(self.conn(), "agents", org_id, agent_id).await?
            || !exists_in_org(self.conn(), GroupKind::Tag.table(), org_id, tag_id).await?
        {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM agent_tags WHERE agent_id = $1 AND tag_id = $2")
            .bind(uuid_text(agent_id))
            .bind(uuid_text(tag_id))
            .execute(&mut *self.conn())
            .await?;
        Ok(())
    }

    /// Files an agent of `org_id` under a folder, site and company. `NotFound` if the agent is
    /// not that organisation's; `Invalid("folder not found")` (or site, company) if a target is
    /// not.
    pub async fn move_agent(
        &mut self,
        org_id: Uuid,
        agent_id: Uuid,
        placement: &AgentPlacement,
    ) -> Result<Agent> {
        if !exists_in_org(self.conn(), "agents", org_id, agent_id).await? {
            return Err(StoreError::NotFound);
        }
        for (kind, target) in [
            (GroupKind::Folder, placement.folder_id),
            (GroupKind::Site, placement.site_id),
            (GroupKind::Company, placement.company_id),
        ] {
            if let Some(Some(id)) = target
                && !exists_in_org(self.conn(), kind.table(), org_id, id).await?
            {
                return Err(StoreError::Invalid(format!("{kind} not found")));
            }
        }
        sqlx::query(
            "UPDATE agents SET \
             folder_id = CASE WHEN $3 = 1 THEN $4 ELSE folder_id END, \
             site_id = CASE WHEN $5 = 1 THEN $6 ELSE site_id END, \
             company_id = CASE WHEN $7 = 1 THEN $8 ELSE company_id END \
             WHERE id = $1 AND org_id = $2",
        )
        .bind(uuid_text(agent_id))
        .bind(uuid_text(org_id))
        .bind(bool_int(placement.folder_id.is_some()))
        .bind(placement.folder_id.flatten().map(uuid_text))
        .bind(bool_int(placement.site_id.is_some()))
        .bind(placement.site_id.flatten().map(uuid_text))
        .bind(bool_int(placement.company_id.is_some()))
        .bind(placement.company_id.flatten().map(uuid_text))
        .execute(&mut *self.conn())
        .await
        .map_err(|e| map_constraint(e, "conflict", "group not found"))?;
        self.agent_in_org(org_id, agent_id)
            .await?
            .ok_or(StoreError::NotFound)
    }
}

impl Store {
    /// An organisation's groups of one kind, ordered by name (byte order on both backends).
    pub async fn list_groups(&self, kind: GroupKind, org_id: Uuid) -> Result<Vec<Group>> {
        let sql = format!(
            "SELECT {GROUP_COLS} FROM {} WHERE org_id = $1 ORDER BY name",
            kind.table()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .fetch_all(self.pool())
            .await?;
        let mut groups = rows
            .iter()
            .map(|r| group_from_row(kind, r))
            .collect::<Result<Vec<_>>>()?;
        groups.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(groups)
    }

    /// The group, if it is one of `org_id`'s.
    pub async fn group(&self, kind: GroupKind, org_id: Uuid, id: Uuid) -> Result<Option<Group>> {
        let sql = format!(
            "SELECT {GROUP_COLS} FROM {} WHERE id = $1 AND org_id = $2",
            kind.table()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(|r| group_from_row(kind, r)).transpose()
    }

    /// The tags of an agent of `org_id`, by name; empty for another organisation's agent.
    pub async fn agent_tags(&self, org_id: Uuid, agent_id: Uuid) -> Result<Vec<Group>> {
        let rows = sqlx::query(
            "SELECT t.id AS id, t.org_id AS org_id, t.name AS name, \
             t.description AS description, t.parent_id AS parent_id, \
             t.created_at AS created_at, t.updated_at AS updated_at \
             FROM agent_tags l \
             JOIN tags t ON t.id = l.tag_id \
             JOIN agents a ON a.id = l.agent_id \
             WHERE l.agent_id = $1 AND a.org_id = $2 AND t.org_id = $2",
        )
        .bind(uuid_text(agent_id))
        .bind(uuid_text(org_id))
        .fetch_all(self.pool())
        .await?;
        let mut tags = rows
            .iter()
            .map(|r| group_from_row(GroupKind::Tag, r))
            .collect::<Result<Vec<_>>>()?;
        tags.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_constant_tables_and_names() {
        for kind in GroupKind::ALL {
            assert_eq!(kind.as_str().parse::<GroupKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
            assert!(kind.table().starts_with(&kind.as_str()[..3]));
        }
        assert_eq!(GroupKind::Company.table(), "companies");
        assert!("Folder".parse::<GroupKind>().is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(valid_name("  ops ").unwrap(), "ops");
        assert!(valid_name(" ").is_err());
        assert!(valid_name(&"é".repeat(MAX_GROUP_NAME_CHARS)).is_ok());
        assert!(valid_name(&"é".repeat(MAX_GROUP_NAME_CHARS + 1)).is_err());
    }
}
