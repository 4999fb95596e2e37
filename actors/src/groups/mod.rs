//! Groups of an organisation's agents: sites, companies, folders (which nest) and tags, and
//! filing agents under them. All four kinds share one shape and one set of operations; only
//! names differ.

mod agents;
mod manage;

pub use agents::{MoveAgent, TagAgent, UntagAgent};
pub use manage::{
    CreateGroup, DeleteGroup, MAX_GROUP_DESCRIPTION_CHARS, UpdateGroup, agent_tags, get_group,
    list_groups,
};
/// Longest group name, in characters (the API schema says the same number; the store checks it
/// too).
pub use reap3r_store::MAX_GROUP_NAME_CHARS;

use reap3r_store::{GroupKind, Uuid};

/// How a group is named in the audit log, e.g. `folder:<id>`.
pub fn group_target(kind: GroupKind, id: Uuid) -> String {
    format!("{}:{id}", kind.as_str())
}
