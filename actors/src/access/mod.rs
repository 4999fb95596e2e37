//! Access: who may do what. Roles and permissions, and the caller every operation is performed
//! by. (Users, sessions, MFA, lockout and API keys join here as operations.)

mod caller;
mod roles;

pub use caller::{Caller, Credential};
pub use roles::{Permission, Role, UnknownName};
