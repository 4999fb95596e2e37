//! The agent records: approval and status (with how status derives from approval, revocation
//! and connection), what an agent presents and reports, and the filter, cursor and counts of
//! the agent lists.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Result, StoreError};

/// Whether an operator has let the agent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentApproval {
    Approved,
    Pending,
    Rejected,
}

impl AgentApproval {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentApproval::Approved => "approved",
            AgentApproval::Pending => "pending",
            AgentApproval::Rejected => "rejected",
        }
    }
}

impl FromStr for AgentApproval {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "approved" => Ok(AgentApproval::Approved),
            "pending" => Ok(AgentApproval::Pending),
            "rejected" => Ok(AgentApproval::Rejected),
            other => Err(StoreError::Invalid(format!("unknown approval {other:?}"))),
        }
    }
}

impl std::fmt::Display for AgentApproval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator sees for an agent, derived from approval, revocation and connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Online,
    Offline,
    Pending,
    Rejected,
    Revoked,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
            AgentStatus::Pending => "pending",
            AgentStatus::Rejected => "rejected",
            AgentStatus::Revoked => "revoked",
        }
    }
}

impl FromStr for AgentStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "online" => Ok(AgentStatus::Online),
            "offline" => Ok(AgentStatus::Offline),
            "pending" => Ok(AgentStatus::Pending),
            "rejected" => Ok(AgentStatus::Rejected),
            "revoked" => Ok(AgentStatus::Revoked),
            other => Err(StoreError::Invalid(format!(
                "unknown agent status {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent presents at enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAgent {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
    /// Ed25519 public key (serialised as hex).
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
}

/// What an agent reports each time it connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHello {
    pub hostname: String,
    pub agent_version: String,
    pub capabilities: Vec<String>,
    pub inventory: serde_json::Value,
    /// The agent's X25519 public key for sealed secrets; stored as `agents.sealing_key` (hex),
    /// replaced at every hello (`None` clears it: that agent can open no sealed secret).
    #[serde(default)]
    pub sealing_key: Option<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    pub org_id: Uuid,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
    /// Ed25519 public key (serialised as hex).
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
    pub approval: AgentApproval,
    pub revoked: bool,
    pub connected: bool,
    /// The node holding the live connection, while connected.
    pub node_id: Option<String>,
    pub capabilities: Vec<String>,
    /// Last reported inventory; `{}` until the first hello.
    pub inventory: serde_json::Value,
    pub token_id: Option<Uuid>,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    #[serde(default)]
    pub folder_id: Option<Uuid>,
    #[serde(default)]
    pub site_id: Option<Uuid>,
    #[serde(default)]
    pub company_id: Option<Uuid>,
}

/// Which agents [`Store::list_agents_page`](crate::Store::list_agents_page) returns; `None`
/// fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Same meaning as [`Agent::status`].
    pub status: Option<AgentStatus>,
    /// Compared ignoring letter case.
    pub os: Option<String>,
    pub tag_id: Option<Uuid>,
    pub folder_id: Option<Uuid>,
    pub site_id: Option<Uuid>,
    pub company_id: Option<Uuid>,
    /// Case-insensitive substring of the hostname.
    pub search: Option<String>,
}

/// Position in the (enrolled_at, id) order: a page starts strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentCursor {
    pub enrolled_at: i64,
    pub id: Uuid,
}

impl From<&Agent> for AgentCursor {
    fn from(agent: &Agent) -> Self {
        AgentCursor {
            enrolled_at: agent.enrolled_at,
            id: agent.id,
        }
    }
}

/// Counts of an organisation's agents by [`Agent::status`] and by operating system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    pub total: u64,
    pub online: u64,
    pub offline: u64,
    pub pending: u64,
    pub rejected: u64,
    pub revoked: u64,
    /// Lower-cased OS name and count, most common first (ties by name).
    pub by_os: Vec<(String, u64)>,
}

/// Most agents [`Store::list_agents_page`](crate::Store::list_agents_page) returns in one call.
pub const MAX_AGENT_PAGE: i64 = 1_000;

impl Agent {
    /// Revocation outranks approval, which outranks connection state.
    pub fn status(&self) -> AgentStatus {
        status_of(self.revoked, self.approval, self.connected)
    }

    /// Whether the agent may hold a connection at all.
    pub fn is_allowed(&self) -> bool {
        !self.revoked && self.approval == AgentApproval::Approved
    }
}

pub(super) fn status_of(revoked: bool, approval: AgentApproval, connected: bool) -> AgentStatus {
    if revoked {
        return AgentStatus::Revoked;
    }
    match approval {
        AgentApproval::Rejected => AgentStatus::Rejected,
        AgentApproval::Pending => AgentStatus::Pending,
        AgentApproval::Approved if connected => AgentStatus::Online,
        AgentApproval::Approved => AgentStatus::Offline,
    }
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(&text, &mut key).map_err(D::Error::custom)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text_and_serde() {
        for a in [
            AgentApproval::Approved,
            AgentApproval::Pending,
            AgentApproval::Rejected,
        ] {
            assert_eq!(a.as_str().parse::<AgentApproval>().unwrap(), a);
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
        }
        for s in [
            AgentStatus::Online,
            AgentStatus::Offline,
            AgentStatus::Pending,
            AgentStatus::Rejected,
            AgentStatus::Revoked,
        ] {
            assert_eq!(s.as_str().parse::<AgentStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("Approved".parse::<AgentApproval>().is_err());
    }

    #[test]
    fn public_keys_serialise_as_hex() {
        let new = NewAgent {
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "1".into(),
            public_key: [0xab; 32],
        };
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["public_key"], "ab".repeat(32));
        let back: NewAgent = serde_json::from_value(json).unwrap();
        assert_eq!(back, new);
    }
}
