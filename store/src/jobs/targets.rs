//! Target resolution: which agents of an organisation a job's selector names, and whether
//! they may run jobs.

use std::collections::{BTreeMap, HashSet};

use sqlx::any::AnyRow;
use uuid::Uuid;

use super::records::JobTargetSelector;
use super::{name_ids, unique_ids};
use crate::Store;
use crate::db::{get_json, get_str, get_uuid, placeholders, uuid_text};
use crate::error::{Result, StoreError};

/// Ids per `IN (...)` list.
const ID_CHUNK: usize = 400;

/// Agents that may run jobs (aliased `a`): approved and not revoked.
const ELIGIBLE_AGENT: &str = "a.approval = 'approved' AND a.revoked = 0";

const AGENT_TARGET_COLS: &str =
    "a.id AS id, a.capabilities AS capabilities, a.hostname AS hostname";

fn agent_target_from_row(row: &AnyRow) -> Result<(Uuid, (Vec<String>, String))> {
    Ok((
        get_uuid(row, "id")?,
        (get_json(row, "capabilities")?, get_str(row, "hostname")?),
    ))
}

impl Store {
    /// The agents of `org_id` a selector names that may run jobs (approved, not revoked), as
    /// (id, capabilities, hostname), by id, without repeats; empty if none.
    ///
    /// - `Agents`: every id must be such an agent of the organisation, otherwise `Invalid`
    ///   naming (up to five of) the others. Unknown, foreign, pending, rejected and revoked
    ///   agents are reported alike, so the answer says nothing about other organisations.
    /// - `Tags`: agents carrying any of the tags; `Invalid` if a tag is not the organisation's.
    /// - `Folder`: agents in the folder or any folder below it; `Invalid` if the folder is not
    ///   the organisation's.
    /// - `All`: every eligible agent of the organisation.
    pub async fn resolve_job_targets(
        &self,
        org_id: Uuid,
        selector: &JobTargetSelector,
    ) -> Result<Vec<(Uuid, Vec<String>, String)>> {
        let org = uuid_text(org_id);
        let mut found: BTreeMap<Uuid, (Vec<String>, String)> = BTreeMap::new();
        match selector {
            JobTargetSelector::Agents(ids) => {
                let ids = unique_ids(ids);
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT {AGENT_TARGET_COLS} FROM agents a \
                         WHERE a.org_id = $1 AND {ELIGIBLE_AGENT} AND a.id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.clone());
                    for id in chunk {
                        query = query.bind(uuid_text(*id));
                    }
                    for row in query.fetch_all(self.pool()).await? {
                        let (id, agent) = agent_target_from_row(&row)?;
                        found.insert(id, agent);
                    }
                }
                let bad: Vec<Uuid> = ids
                    .into_iter()
                    .filter(|id| !found.contains_key(id))
                    .collect();
                if !bad.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "not agents of this organisation that may run jobs (unknown, pending, \
                         rejected or revoked): {}",
                        name_ids(&bad)
                    )));
                }
            }
            JobTargetSelector::Tags(ids) => {
                let ids = unique_ids(ids);
                let mut known = HashSet::with_capacity(ids.len());
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT id FROM tags WHERE org_id = $1 AND id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.clone());
                    for id in chunk {
                        query = query.bind(uuid_text(*id));
                    }
                    for row in query.fetch_all(self.pool()).await? {
                        known.insert(get_uuid(&row, "id")?);
                    }
                }
                let missing: Vec<Uuid> = ids
                    .iter()
                    .copied()
                    .filter(|id| !known.contains(id))
                    .collect();
                if !missing.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "tags not found: {}",
                        name_ids(&missing)
                    )));
                }
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT {AGENT_TARGET_COLS} FROM agents a \
                         WHERE a.org_id = $1 AND {ELIGIBLE_AGENT} AND EXISTS ( \
                             SELECT 1 FROM agent_tags l \
                             WHERE l.agent_id = a.id AND l.tag_id IN ({}))",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.clone());
                    for id in chunk {
                        query = query.bind(uuid_text(*id));
                    }
                    for row in query.fetch_all(self.pool()).await? {
                        let (id, agent) = agent_target_from_row(&row)?;
                        found.insert(id, agent);
                    }
                }
            }
            JobTargetSelector::Folder(folder_id) => {
                let exists =
                    sqlx::query("SELECT 1 AS one FROM folders WHERE id = $1 AND org_id = $2")
                        .bind(uuid_text(*folder_id))
                        .bind(org.clone())
                        .fetch_optional(self.pool())
                        .await?
                        .is_some();
                if !exists {
                    return Err(StoreError::Invalid("folder not found".into()));
                }
                // UNION (not UNION ALL) stops even on a corrupted, cyclic folder tree.
                let sql = format!(
                    "WITH RECURSIVE subtree (id) AS ( \
                         SELECT id FROM folders WHERE id = $2 AND org_id = $1 \
                         UNION \
                         SELECT f.id FROM folders f JOIN subtree s ON f.parent_id = s.id \
                         WHERE f.org_id = $1 \
                     ) \
                     SELECT {AGENT_TARGET_COLS} FROM agents a \
                     WHERE a.org_id = $1 AND {ELIGIBLE_AGENT} \
                       AND a.folder_id IN (SELECT id FROM subtree)"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(org.clone())
                    .bind(uuid_text(*folder_id))
                    .fetch_all(self.pool())
                    .await?;
                for row in &rows {
                    let (id, agent) = agent_target_from_row(row)?;
                    found.insert(id, agent);
                }
            }
            JobTargetSelector::All => {
                let sql = format!(
                    "SELECT {AGENT_TARGET_COLS} FROM agents a \
                     WHERE a.org_id = $1 AND {ELIGIBLE_AGENT}"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(org.clone())
                    .fetch_all(self.pool())
                    .await?;
                for row in &rows {
                    let (id, agent) = agent_target_from_row(row)?;
                    found.insert(id, agent);
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|(id, (capabilities, hostname))| (id, capabilities, hostname))
            .collect())
    }
}
