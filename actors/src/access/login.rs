//! Logging in: the password check (timed alike for unknown emails), the lockout policy per
//! account and per source address, and either a session or, for accounts with MFA, a challenge
//! to finish with a TOTP code ([`super::mfa::LoginMfa`]). Every attempt is a login event; the
//! session a login opens commits with its success event and its `auth.login` audit record.

use reap3r_store::{NewLoginEvent, Store, User};

use super::password::{decoy_hash, verify_off_thread};
use super::secrets::{CHALLENGE_PREFIX, hash_secret, new_secret};
use super::sessions::{Tokens, open_session};
use super::settings::AccessSettings;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};

/// Longest email looked up, in characters (the API schema says the same number).
pub const MAX_LOGIN_EMAIL_CHARS: usize = 320;
/// Longest password looked at, in bytes (the API schema says the same number).
pub const MAX_LOGIN_PASSWORD_BYTES: usize = 1024;
/// Longest user agent kept with a session, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// Where a request comes from: a login, or an access to a secret (its access log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The source address, or `unknown`.
    pub source_ip: String,
    pub user_agent: Option<String>,
}

impl Default for Origin {
    /// Unknown: a request from inside the server (the CLI, a sweep).
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl Origin {
    pub fn new(source_ip: Option<String>, user_agent: Option<&str>) -> Self {
        Self {
            source_ip: source_ip.unwrap_or_else(|| "unknown".to_owned()),
            user_agent: user_agent.map(|s| s.chars().take(MAX_USER_AGENT_CHARS).collect()),
        }
    }
}

/// Why a login is refused before its password is even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// Too many failures from the source address.
    Address,
    /// Too many failures for the account.
    Account,
}

impl Lockout {
    /// The login event outcome recorded for the refusal.
    pub fn outcome(self) -> &'static str {
        match self {
            Lockout::Address => "ip_locked",
            Lockout::Account => "account_locked",
        }
    }

    pub fn error(self) -> DomainError {
        match self {
            Lockout::Address => DomainError::too_many(
                "too_many_attempts",
                "too many failed logins from this address; try again later",
            ),
            Lockout::Account => DomainError::too_many(
                "account_locked",
                "too many failed logins for this account; try again later",
            ),
        }
    }
}

impl AccessSettings {
    /// The earliest failure that still counts towards a lockout at `now_ms`.
    pub fn lockout_window_start(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.lockout_window_ms)
    }

    /// The lockout policy: given the failures within the window from the source address and
    /// for the account, whether to refuse (the address is checked first).
    pub fn lockout(&self, failures_by_ip: u64, failures_by_account: u64) -> Option<Lockout> {
        if failures_by_ip >= self.lockout_ip_failures {
            Some(Lockout::Address)
        } else if failures_by_account >= self.lockout_account_failures {
            Some(Lockout::Account)
        } else {
            None
        }
    }
}

/// One login attempt by email from an origin: records its events, applies the lockout.
pub(crate) struct Attempt<'a> {
    pub store: &'a Store,
    pub settings: &'a AccessSettings,
    pub email: String,
    pub origin: &'a Origin,
    pub now: i64,
}

impl Attempt<'_> {
    pub fn event(
        &self,
        user: Option<&User>,
        success: bool,
        outcome: &str,
        detail: Option<String>,
    ) -> NewLoginEvent {
        NewLoginEvent {
            org_id: user.map(|u| u.org_id),
            user_id: user.map(|u| u.id),
            email: self.email.clone(),
            source_ip: self.origin.source_ip.clone(),
            success,
            outcome: outcome.to_owned(),
            detail,
        }
    }

    /// Records a failed (or unfinished) attempt at once: it counts whatever happens next.
    pub async fn record(
        &self,
        user: Option<&User>,
        success: bool,
        outcome: &str,
    ) -> DomainResult<()> {
        self.store
            .record_login_event(&self.event(user, success, outcome, None), self.now)
            .await?;
        Ok(())
    }

    /// Refuses an address or an account that failed too often within the window.
    pub async fn check_lockout(&self, user: Option<&User>) -> DomainResult<()> {
        let since = self.settings.lockout_window_start(self.now);
        let by_ip = self
            .store
            .count_login_failures_for_ip(&self.origin.source_ip, since)
            .await?;
        // The account is only counted when the address passes.
        let by_account = if by_ip >= self.settings.lockout_ip_failures {
            0
        } else {
            self.store
                .count_login_failures_for_email(&self.email, since)
                .await?
        };
        match self.settings.lockout(by_ip, by_account) {
            None => Ok(()),
            Some(lockout) => {
                self.record(user, false, lockout.outcome()).await?;
                Err(lockout.error())
            }
        }
    }
}

pub(crate) fn invalid_credentials() -> DomainError {
    DomainError::unauthenticated("invalid_credentials", "wrong email or password")
}

pub(crate) fn suspended() -> DomainError {
    DomainError::forbidden("the account is suspended")
}

/// What a password login gives.
#[derive(Debug)]
pub enum LoginOutcome {
    /// A new session.
    Tokens(Tokens),
    /// The account has MFA: finish with this challenge and a code.
    MfaRequired { challenge_token: String },
}

/// Logging in with email and password.
#[derive(Debug, Clone)]
pub struct Login {
    pub email: String,
    pub password: String,
    pub origin: Origin,
}

impl Login {
    pub async fn run(
        self,
        domain: &Domain,
        settings: &AccessSettings,
    ) -> DomainResult<LoginOutcome> {
        let attempt = Attempt {
            store: &domain.store,
            settings,
            email: self.email.trim().to_lowercase(),
            origin: &self.origin,
            now: domain.now_ms(),
        };
        let user = domain.store.user_by_email(&attempt.email).await?;
        attempt.check_lockout(user.as_ref()).await?;
        let phc = user
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |u| u.password_hash.clone());
        let password_ok = verify_off_thread(self.password, phc).await;
        let user = match user {
            Some(user) if password_ok => user,
            Some(user) => {
                attempt.record(Some(&user), false, "bad_password").await?;
                return Err(invalid_credentials());
            }
            None => {
                attempt.record(None, false, "unknown_user").await?;
                return Err(invalid_credentials());
            }
        };
        if user.status != "active" {
            attempt.record(Some(&user), false, "suspended").await?;
            return Err(suspended());
        }
        if user.mfa_enabled {
            let challenge = new_secret(CHALLENGE_PREFIX)?;
            domain
                .store
                .create_mfa_challenge(
                    &hash_secret(&challenge),
                    user.id,
                    &attempt.origin.source_ip,
                    attempt.now + settings.mfa_challenge_ttl_ms,
                    attempt.now,
                )
                .await?;
            attempt.record(Some(&user), true, "mfa_required").await?;
            return Ok(LoginOutcome::MfaRequired {
                challenge_token: challenge,
            });
        }
        let mut tx = domain.begin().await?;
        tx.record_login_event(
            &attempt.event(Some(&user), true, "success", None),
            attempt.now,
        )
        .await?;
        let tokens = open_session(&mut tx, settings, &user, &self.origin, attempt.now).await?;
        domain.commit(tx).await?;
        Ok(LoginOutcome::Tokens(tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_thresholds_address_first() {
        let s = AccessSettings::default();
        assert_eq!(s.lockout(0, 0), None);
        assert_eq!(s.lockout(19, 4), None);
        assert_eq!(s.lockout(19, 5), Some(Lockout::Account));
        assert_eq!(s.lockout(20, 0), Some(Lockout::Address));
        assert_eq!(s.lockout(20, 5), Some(Lockout::Address));
        assert_eq!(Lockout::Address.outcome(), "ip_locked");
        assert_eq!(Lockout::Account.outcome(), "account_locked");
        assert!(matches!(
            Lockout::Account.error(),
            DomainError::TooMany {
                code: "account_locked",
                ..
            }
        ));
        assert!(matches!(
            Lockout::Address.error(),
            DomainError::TooMany {
                code: "too_many_attempts",
                ..
            }
        ));
    }

    #[test]
    fn lockout_window_reaches_back_its_length() {
        let s = AccessSettings::default();
        assert_eq!(
            s.lockout_window_start(1_000_000_000),
            1_000_000_000 - 15 * 60 * 1000
        );
        assert_eq!(s.lockout_window_start(i64::MIN), i64::MIN);
    }

    #[test]
    fn origins_default_and_cap() {
        let o = Origin::new(None, Some(&"x".repeat(1000)));
        assert_eq!(o.source_ip, "unknown");
        assert_eq!(
            o.user_agent.map(|u| u.chars().count()),
            Some(MAX_USER_AGENT_CHARS)
        );
    }
}
