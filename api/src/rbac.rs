//! Roles as the API spells them. The roles and permissions themselves are the domain's
//! (`reap3r_actors::access`); routes name the permission they need in [`crate::routes::ROUTES`].

use poem_openapi::Enum;
pub use reap3r_actors::access::{Permission, Role, UnknownName};

// A field whose type is an `Enum` or `Object` (a `$ref` in the spec) must not have a doc comment:
// poem-openapi attaches it as `allOf: [{$ref}, {description}]`, which openapi-python-client
// rejects (it drops the schema and every operation using it). Describe the type here, and the
// field's role in the doc comment of the enclosing object.
/// A role as it appears in request bodies (an enum in the spec, so clients get the list). A request
/// may not grant a role above the caller's own.
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
