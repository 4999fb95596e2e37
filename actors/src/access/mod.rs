//! Access: who may do what, and the operations on accounts and credentials. Roles and
//! permissions, the caller every operation is performed by, turning a presented credential into
//! that caller, logins with lockout, MFA, sessions with refresh rotation, users and API keys.

mod api_keys;
mod authenticate;
mod caller;
mod login;
mod mfa;
pub mod password;
mod roles;
mod secrets;
mod sessions;
mod settings;
pub mod totp;
mod users;

pub use api_keys::{
    CreateApiKey, CreatedApiKey, DeleteApiKey, MAX_API_KEY_LIFETIME_S, MAX_API_KEY_NAME_CHARS,
    MAX_API_KEY_SCOPES, MIN_API_KEY_LIFETIME_S, api_key_target, key_scopes,
};
pub use authenticate::{
    MAX_CREDENTIAL_LEN, TOUCH_INTERVAL_MS, authenticate, credential_holds, role_in_org,
};
pub use caller::{Caller, Credential};
pub use login::{
    Lockout, Login, LoginOutcome, MAX_LOGIN_EMAIL_CHARS, MAX_LOGIN_PASSWORD_BYTES,
    MAX_USER_AGENT_CHARS, Origin,
};
pub use mfa::{
    DisableMfa, EnableMfa, LoginMfa, MAX_CHALLENGE_TOKEN_CHARS, MAX_CODE_CHARS, MfaEnrolment,
    SetupMfa, StepUp, challenge_verdict, has_fresh_step_up,
};
pub use password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
pub use roles::{Permission, Role, UnknownName};
pub use secrets::{
    ACCESS_PREFIX, API_KEY_PREFIX, CHALLENGE_PREFIX, REFRESH_PREFIX, hash_secret, new_secret,
};
pub use sessions::{
    Logout, MAX_REFRESH_TOKEN_CHARS, Refresh, RefreshVerdict, RevokeSession, RevokeUserSessions,
    Tokens, refresh_reused, session_target, user_sessions,
};
pub use settings::AccessSettings;
pub use users::{
    ChangePassword, ChangeRole, CreateUser, MAX_DISPLAY_NAME_CHARS, MAX_EMAIL_CHARS, ResetMfa,
    SetSuspended, UpdateUser, check_grant, user_target, valid_email,
};
