//! Who performs an operation: a user through a session or an API key, or the local admin CLI.
//! Operations check permissions on it and name it in the audit log.

use reap3r_store::Uuid;

use super::roles::{Permission, Role};
use crate::error::{DomainError, DomainResult};

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Session {
        session_id: Uuid,
    },
    ApiKey {
        key_id: Uuid,
        scopes: Vec<Permission>,
    },
    /// The `reap3r` admin CLI on the server's own machine: it holds the data dir or the
    /// database URL, so it acts as a super admin.
    Cli,
}

/// An authenticated caller acting in one organisation with one role.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account; `None` for the CLI.
    pub user_id: Option<Uuid>,
    pub email: String,
    /// The organisation the user belongs to.
    pub home_org: Uuid,
    /// The organisation this request acts in; every query is scoped to it.
    pub org_id: Uuid,
    /// The role held in `org_id`.
    pub role: Role,
    pub credential: Credential,
}

impl Caller {
    /// The admin CLI acting in `org_id`.
    pub fn cli(org_id: Uuid) -> Self {
        Self {
            user_id: None,
            email: String::new(),
            home_org: org_id,
            org_id,
            role: Role::SuperAdmin,
            credential: Credential::Cli,
        }
    }

    /// Names who ran the CLI (the operating-system user) for the audit log: `cli:<who>`.
    pub fn run_by(mut self, who: &str) -> Self {
        if self.credential == Credential::Cli {
            self.email = who.to_owned();
        }
        self
    }

    /// Whether the role holds the permission and, for API keys, the key's scopes include it.
    pub fn allows(&self, p: Permission) -> bool {
        self.role.grants(p)
            && match &self.credential {
                Credential::Session { .. } | Credential::Cli => true,
                Credential::ApiKey { scopes, .. } => scopes.contains(&p),
            }
    }

    pub fn require(&self, p: Permission) -> DomainResult<()> {
        if self.allows(p) {
            Ok(())
        } else {
            Err(DomainError::forbidden(format!("requires permission {p}")))
        }
    }

    /// How the caller is named in the audit log.
    pub fn actor(&self) -> String {
        match &self.credential {
            Credential::Session { .. } => format!("user:{}", self.email),
            Credential::ApiKey { key_id, .. } => format!("api_key:{key_id}:{}", self.email),
            Credential::Cli if self.email.is_empty() => "cli".to_owned(),
            Credential::Cli => format!("cli:{}", self.email),
        }
    }

    /// The caller's account, for operations on one's own account (the CLI has none).
    pub fn account(&self) -> DomainResult<Uuid> {
        self.user_id
            .ok_or_else(|| DomainError::forbidden("this needs a user account"))
    }

    pub fn session_id(&self) -> Option<Uuid> {
        match &self.credential {
            Credential::Session { session_id } => Some(*session_id),
            Credential::ApiKey { .. } | Credential::Cli => None,
        }
    }
}
