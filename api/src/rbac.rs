//! Roles as the API spells them. The roles and permissions themselves are the domain's
//! (`reap3r_actors::access`); routes name the permission they need in [`crate::routes::ROUTES`].

use poem_openapi::Enum;
pub use reap3r_actors::access::{Permission, Role, UnknownName};

/// A role as it appears in request bodies (an enum in the spec, so clients get the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RoleName {
    SuperAdmin,
    OrgAdmin,
    Technician,
    Viewer,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Role {
        match r {
            RoleName::SuperAdmin => Role::SuperAdmin,
            RoleName::OrgAdmin => Role::OrgAdmin,
            RoleName::Technician => Role::Technician,
            RoleName::Viewer => Role::Viewer,
        }
    }
}
