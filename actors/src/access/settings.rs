//! The access policy a deployment can tune: token lifetimes, MFA challenge limits and lockout
//! thresholds. The API hands it to the access operations.

/// Access policy settings (defaults are what a node runs with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    pub access_ttl_ms: i64,
    pub refresh_ttl_ms: i64,
    pub mfa_challenge_ttl_ms: i64,
    /// Wrong codes allowed per MFA challenge before it is spent.
    pub mfa_max_attempts: i64,
    /// Failed logins per account within the window before the account is locked out.
    pub lockout_account_failures: u64,
    /// Failed logins per source address within the window before that address is refused.
    pub lockout_ip_failures: u64,
    pub lockout_window_ms: i64,
    /// Issuer shown in authenticator apps.
    pub totp_issuer: String,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            access_ttl_ms: 15 * 60 * 1000,
            refresh_ttl_ms: 7 * 24 * 3600 * 1000,
            mfa_challenge_ttl_ms: 5 * 60 * 1000,
            mfa_max_attempts: 5,
            lockout_account_failures: 5,
            lockout_ip_failures: 20,
            lockout_window_ms: 15 * 60 * 1000,
            totp_issuer: "Reap3r".into(),
        }
    }
}
