//! Roles and permissions: what each built-in role may do. API routes name the permission they
//! need in the API's route table; this module only says which roles hold which permission.

use std::fmt;
use std::str::FromStr;

use reap3r_wire::JobType;

macro_rules! permissions {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// One thing a caller may be allowed to do, written `resource:action`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($variant,)+
            /// Creating a job of this type, on top of `job:create`; named `job:<type>` (see
            /// [`JobType::permission_name`]), one per entry of the job type list.
            RunJob(JobType),
        }

        /// The permissions that are not per job type, in their listed order.
        const FIXED: &[Permission] = &[$(Permission::$variant),+];

        impl Permission {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)+
                    Permission::RunJob(job_type) => job_type.permission_name(),
                }
            }
        }

        impl FromStr for Permission {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok(Permission::$variant),)+
                    other => JobType::ALL
                        .iter()
                        .find(|t| t.permission_name() == other)
                        .map(|t| Permission::RunJob(*t))
                        .ok_or_else(|| UnknownName(other.to_owned())),
                }
            }
        }
    };
}

permissions! {
    AgentList => "agent:list",
    AgentView => "agent:view",
    AgentApprove => "agent:approve",
    AgentRevoke => "agent:revoke",
    AgentDelete => "agent:delete",
    AgentMove => "agent:move",
    AgentTag => "agent:tag",
    DashboardView => "dashboard:view",
    TokenList => "token:list",
    TokenCreate => "token:create",
    TokenRevoke => "token:revoke",
    UserList => "user:list",
    UserView => "user:view",
    UserCreate => "user:create",
    UserUpdate => "user:update",
    UserSuspend => "user:suspend",
    UserResetMfa => "user:reset_mfa",
    RoleList => "role:list",
    RoleUpdate => "role:update",
    OrgList => "org:list",
    OrgCreate => "org:create",
    OrgAssign => "org:assign",
    SiteList => "site:list",
    SiteCreate => "site:create",
    SiteUpdate => "site:update",
    SiteDelete => "site:delete",
    CompanyList => "company:list",
    CompanyView => "company:view",
    CompanyCreate => "company:create",
    CompanyUpdate => "company:update",
    CompanyDelete => "company:delete",
    FolderList => "folder:list",
    FolderView => "folder:view",
    FolderCreate => "folder:create",
    FolderUpdate => "folder:update",
    FolderDelete => "folder:delete",
    TagList => "tag:list",
    TagCreate => "tag:create",
    TagUpdate => "tag:update",
    TagDelete => "tag:delete",
    SettingsView => "settings:view",
    SettingsUpdate => "settings:update",
    AuditView => "audit:view",
    AuditVerify => "audit:verify",
    JobList => "job:list",
    JobView => "job:view",
    JobCreate => "job:create",
    JobCancel => "job:cancel",
    MetricsView => "metrics:view",
    AlertRuleList => "alert:rule_list",
    AlertRuleCreate => "alert:rule_create",
    AlertRuleUpdate => "alert:rule_update",
    AlertRuleDelete => "alert:rule_delete",
    AlertEventList => "alert:event_list",
    AlertEventAck => "alert:event_ack",
    AlertEventResolve => "alert:event_resolve",
    AlertEventSnooze => "alert:event_snooze",
    AlertSilenceManage => "alert:silence_manage",
    AlertPolicyManage => "alert:policy_manage",
    AlertMaintenanceManage => "alert:maintenance_manage",
    AlertIntegrationManage => "alert:integration_manage",
    AlertTest => "alert:test",
    SecretList => "secret:list",
    SecretRead => "secret:read",
    SecretWrite => "secret:write",
    SecretDelete => "secret:delete",
    SecretReveal => "secret:reveal",
    SecretUse => "secret:use",
    ShellOpen => "shell:open",
    ShellView => "shell:view",
    FilePush => "file:push",
    FilePull => "file:pull",
    FileView => "file:view",
    UpdateRelease => "update:release",
    UpdateView => "update:view",
}

/// How many permissions there are: the fixed ones, then one per job type.
const PERMISSION_COUNT: usize = FIXED.len() + JobType::ALL.len();

/// [`FIXED`], then [`Permission::RunJob`] of each job type in the job type list's order.
const fn all_permissions() -> [Permission; PERMISSION_COUNT] {
    let mut all = [Permission::JobCreate; PERMISSION_COUNT];
    let mut i = 0;
    while i < FIXED.len() {
        all[i] = FIXED[i];
        i += 1;
    }
    let mut j = 0;
    while j < JobType::ALL.len() {
        all[FIXED.len() + j] = Permission::RunJob(JobType::ALL[j]);
        j += 1;
    }
    all
}

impl Permission {
    pub const ALL: &'static [Permission] = &all_permissions();
}

/// A name that is not a known role or permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in roles, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, in every organisation.
    SuperAdmin,
    /// Everything inside its organisation(s).
    OrgAdmin,
    /// Day-to-day fleet work: agents, tokens, groupings; no users, keys or audit.
    Technician,
    /// Read-only.
    Viewer,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::SuperAdmin,
        Role::OrgAdmin,
        Role::Technician,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::OrgAdmin => "org_admin",
            Role::Technician => "technician",
            Role::Viewer => "viewer",
        }
    }

    /// Whether the role holds a permission.
    pub fn grants(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::SuperAdmin => true,
            // Creating organisations and verifying the installation-wide audit chain (which
            // spans every organisation) are kept for super admins.
            // Releases run on every organisation's agents: a super admin's too.
            Role::OrgAdmin => !matches!(p, OrgCreate | AuditVerify | UpdateRelease),
            Role::Technician => match p {
                RunJob(job_type) => technician_runs(job_type),
                _ => matches!(
                    p,
                    AgentList
                        | AgentView
                        | AgentApprove
                        | AgentMove
                        | AgentTag
                        | DashboardView
                        | TokenList
                        | TokenCreate
                        | TokenRevoke
                        | OrgList
                        | SiteList
                        | SiteCreate
                        | SiteUpdate
                        | CompanyList
                        | CompanyView
                        | FolderList
                        | FolderView
                        | FolderCreate
                        | FolderUpdate
                        | TagList
                        | TagCreate
                        | TagUpdate
                        | SettingsView
                        | SettingsUpdate
                        | JobList
                        | JobView
                        | JobCreate
                        | JobCancel
                        | MetricsView
                        | AlertRuleList
                        | AlertEventList
                        | AlertEventAck
                        | AlertEventResolve
                        | AlertEventSnooze
                        | AlertSilenceManage
                        // Technicians use customers' credentials every day; deleting one is
                        // an admin's call. Each secret still needs its owner's grant.
                        | SecretList
                        | SecretRead
                        | SecretWrite
                        | SecretReveal
                        | SecretUse
                        // Pushing and pulling files act as root on the agent: an admin's.
                        | FileView
                        | UpdateView
                ),
            },
            Role::Viewer => matches!(
                p,
                AgentList
                    | AgentView
                    | DashboardView
                    | OrgList
                    | SiteList
                    | CompanyList
                    | CompanyView
                    | FolderList
                    | FolderView
                    | TagList
                    | SettingsView
                    | JobList
                    | JobView
                    | MetricsView
                    | AlertRuleList
                    | AlertEventList
                    | SecretList
                    | SecretRead
            ),
        }
    }

    pub fn permissions(self) -> Vec<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|p| self.grants(*p))
            .collect()
    }

    /// Whether someone holding `self` may hand `other` to a user: never a role with more power
    /// than one's own.
    pub fn may_grant(self, other: Role) -> bool {
        other >= self
    }
}

/// Which job types technicians may create: everything but what changes an agent's
/// configuration or takes the machine down. A new job type does not compile until it is
/// decided here.
fn technician_runs(job_type: JobType) -> bool {
    match job_type {
        JobType::RunScript
        | JobType::ProcessList
        | JobType::ProcessKill
        | JobType::ServiceList
        | JobType::ServiceAction
        | JobType::CollectInventory
        | JobType::WakeOnLan => true,
        JobType::ConfigUpdate | JobType::Reboot | JobType::Shutdown => false,
    }
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), *p);
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
        }
        assert!("agent:fly".parse::<Permission>().is_err());
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn roles_are_nested() {
        // Each role holds everything the role below it holds.
        for pair in Role::ALL.windows(2) {
            for p in pair[1].permissions() {
                assert!(pair[0].grants(p), "{} lacks {p}", pair[0]);
            }
        }
        assert!(!Role::Viewer.grants(Permission::AgentDelete));
        assert!(!Role::Technician.grants(Permission::UserCreate));
        assert!(!Role::OrgAdmin.grants(Permission::OrgCreate));
    }

    #[test]
    fn nobody_grants_above_themselves() {
        assert!(Role::OrgAdmin.may_grant(Role::Technician));
        assert!(Role::OrgAdmin.may_grant(Role::OrgAdmin));
        assert!(!Role::OrgAdmin.may_grant(Role::SuperAdmin));
        assert!(!Role::Technician.may_grant(Role::OrgAdmin));
    }
}
