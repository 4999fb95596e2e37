//! TOTP MFA: enrolment (a pending secret, confirmed by a first code), disabling with a current
//! code, and the second step of a login: a challenge that allows a few attempts and a code that
//! works once. Changing MFA needs a person at a login session, not an integration's key.

use reap3r_store::{ChallengeCheck, SealedColumn, Tx, User};
use serde_json::json;
use zeroize::Zeroizing;

use super::caller::{Caller, Credential};
use super::login::{Attempt, Origin, invalid_credentials, suspended};
use super::secrets::hash_secret;
use super::sessions::{Tokens, open_session};
use super::settings::AccessSettings;
use super::totp;
use super::users::user_target;
use crate::audit;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};
use crate::vault::STEP_UP_WINDOW_MS;

/// Longest challenge token looked at, in characters (the API schema says the same number).
pub const MAX_CHALLENGE_TOKEN_CHARS: usize = 256;
/// Longest code looked at, in characters (the API schema says the same number).
pub const MAX_CODE_CHARS: usize = 16;

/// What an MFA challenge attempt means. Pure, so the attempt limit is tested on its own.
pub fn challenge_verdict(check: ChallengeCheck) -> DomainResult<reap3r_store::Uuid> {
    match check {
        ChallengeCheck::Open { user_id, .. } => Ok(user_id),
        ChallengeCheck::TooManyAttempts => Err(DomainError::too_many(
            "too_many_attempts",
            "too many codes tried for this challenge; log in again",
        )),
        ChallengeCheck::Unknown | ChallengeCheck::Expired | ChallengeCheck::Used => Err(
            invalid_challenge("the MFA challenge is unknown, used or expired; log in again"),
        ),
    }
}

fn invalid_challenge(message: &str) -> DomainError {
    DomainError::unauthenticated("invalid_challenge", message)
}

/// The second step of an MFA login: the challenge from the password step and a TOTP code.
#[derive(Debug, Clone)]
pub struct LoginMfa {
    pub challenge_token: String,
    pub code: String,
    pub origin: Origin,
}

impl LoginMfa {
    pub async fn run(self, domain: &Domain, settings: &AccessSettings) -> DomainResult<Tokens> {
        let now = domain.now_ms();
        let hash = hash_secret(self.challenge_token.trim());
        let check = domain
            .store
            .mfa_challenge_attempt(&hash, settings.mfa_max_attempts, now)
            .await?;
        let user_id = challenge_verdict(check)?;
        let user = domain
            .store
            .user_by_id(user_id)
            .await?
            .ok_or_else(invalid_credentials)?;
        let attempt = Attempt {
            store: &domain.store,
            settings,
            email: user.email.clone(),
            origin: &self.origin,
            now,
        };
        attempt.check_lockout(Some(&user)).await?;
        let sealed = user
            .mfa_secret
            .clone()
            .filter(|_| user.mfa_enabled)
            .ok_or_else(|| invalid_challenge("MFA is not enabled"))?;
        let secret = open_totp(domain, &user, &sealed)?;
        let Some(step) = totp::matching_step(&secret, &self.code, now)? else {
            attempt.record(Some(&user), false, "mfa_failed").await?;
            return Err(DomainError::unauthenticated(
                "invalid_code",
                "wrong MFA code",
            ));
        };
        let mut tx = domain.begin().await?;
        if !tx.accept_totp_step(user.id, step).await? {
            // Nothing was written; the failure is recorded once the transaction is gone.
            drop(tx);
            attempt
                .record(Some(&user), false, "mfa_code_reused")
                .await?;
            return Err(DomainError::unauthenticated(
                "code_already_used",
                "this MFA code was already used; wait for the next one",
            ));
        }
        if !tx.consume_mfa_challenge(&hash, now).await? {
            return Err(invalid_challenge("the MFA challenge was already used"));
        }
        if user.status != "active" {
            return Err(suspended());
        }
        tx.record_login_event(
            &attempt.event(Some(&user), true, "success", Some("mfa".into())),
            now,
        )
        .await?;
        let tokens = open_session(&mut tx, settings, &user, &self.origin, now).await?;
        domain.commit(tx).await?;
        Ok(tokens)
    }
}

/// MFA changes need a person at a session, not an integration's key.
fn session_only(caller: &Caller) -> DomainResult<()> {
    if caller.session_id().is_none() {
        return Err(DomainError::forbidden(
            "MFA can only be changed from a login session",
        ));
    }
    Ok(())
}

async fn own_user(tx: &mut Tx, caller: &Caller) -> DomainResult<User> {
    tx.user_by_id(caller.account()?)
        .await?
        .ok_or(DomainError::NotFound("user"))
}

/// Checks a code from a signed-in user's app and uses up its time step, so it works once.
/// Opens a user's sealed TOTP secret (`users.mfa_secret`, sealed under the master key with the
/// user id as AAD).
fn open_totp(domain: &Domain, user: &User, sealed: &str) -> DomainResult<Zeroizing<String>> {
    domain
        .vault
        .open_column_text(SealedColumn::UserMfaSecret, None, user.id, sealed)
}

async fn spend_code(
    tx: &mut Tx,
    user: &User,
    secret: &str,
    code: &str,
    now: i64,
) -> DomainResult<()> {
    let step = totp::matching_step(secret, code, now)?
        .ok_or_else(|| DomainError::bad_request("invalid_code", "wrong MFA code"))?;
    if !tx.accept_totp_step(user.id, step).await? {
        return Err(DomainError::bad_request(
            "code_already_used",
            "this code was already used",
        ));
    }
    Ok(())
}

/// A new, not yet active MFA secret for the authenticator app.
#[derive(Debug, Clone)]
pub struct MfaEnrolment {
    /// Base32, for manual entry.
    pub secret: String,
    /// `otpauth://` URL for QR codes.
    pub otpauth_url: String,
}

/// Starting MFA setup: MFA is not active until [`EnableMfa`] receives a valid code.
#[derive(Debug, Clone, Default)]
pub struct SetupMfa;

impl SetupMfa {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        settings: &AccessSettings,
    ) -> DomainResult<MfaEnrolment> {
        session_only(caller)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let user = own_user(&mut tx, caller).await?;
        if user.mfa_enabled {
            return Err(DomainError::conflict(
                "MFA is already enabled; disable it first",
            ));
        }
        let secret = totp::new_secret()?;
        let url = totp::otpauth_url(&secret, &user.email, &settings.totp_issuer)?;
        let sealed = domain
            .vault
            .seal_column(
                &mut tx,
                SealedColumn::UserMfaSecret,
                None,
                user.id,
                secret.as_bytes(),
                now,
            )
            .await?;
        tx.set_user_mfa(user.id, Some(&sealed), false, now).await?;
        audit::record(
            &mut tx,
            caller,
            "user.mfa_setup",
            Some(user_target(user.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(MfaEnrolment {
            secret,
            otpauth_url: url,
        })
    }
}

/// Turning MFA on by proving the authenticator app has the pending secret.
#[derive(Debug, Clone)]
pub struct EnableMfa {
    pub code: String,
}

impl EnableMfa {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        session_only(caller)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let user = own_user(&mut tx, caller).await?;
        if user.mfa_enabled {
            return Err(DomainError::conflict("MFA is already enabled"));
        }
        let sealed = user
            .mfa_secret
            .clone()
            .ok_or_else(|| DomainError::conflict("call /api/auth/mfa/setup first"))?;
        let secret = open_totp(domain, &user, &sealed)?;
        spend_code(&mut tx, &user, &secret, &self.code, now).await?;
        tx.set_user_mfa(user.id, Some(&sealed), true, now).await?;
        audit::record(
            &mut tx,
            caller,
            "user.mfa_enable",
            Some(user_target(user.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// Turning MFA off; needs a current code.
#[derive(Debug, Clone)]
pub struct DisableMfa {
    pub code: String,
}

impl DisableMfa {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        session_only(caller)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let user = own_user(&mut tx, caller).await?;
        let sealed = user
            .mfa_secret
            .clone()
            .filter(|_| user.mfa_enabled)
            .ok_or_else(|| DomainError::conflict("MFA is not enabled"))?;
        let secret = open_totp(domain, &user, &sealed)?;
        spend_code(&mut tx, &user, &secret, &self.code, now).await?;
        tx.set_user_mfa(user.id, None, false, now).await?;
        audit::record(
            &mut tx,
            caller,
            "user.mfa_disable",
            Some(user_target(user.id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// `POST /api/auth/step-up`: proves the second factor again in this session, so that for the
/// next [`STEP_UP_WINDOW_MS`] it may reveal secrets and open shells. Answers when the step-up lapses.
#[derive(Debug, Clone)]
pub struct StepUp {
    pub code: String,
}

impl StepUp {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<i64> {
        let Credential::Session { session_id } = caller.credential else {
            return Err(DomainError::forbidden(
                "a step-up is for login sessions; API keys have no second factor",
            ));
        };
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let user = own_user(&mut tx, caller).await?;
        let sealed = user
            .mfa_secret
            .clone()
            .filter(|_| user.mfa_enabled)
            .ok_or_else(|| {
                DomainError::conflict("MFA is not enabled for this account; nothing to step up")
            })?;
        let secret = open_totp(domain, &user, &sealed)?;
        spend_code(&mut tx, &user, &secret, &self.code, now).await?;
        if !tx.record_step_up(session_id, now).await? {
            return Err(DomainError::unauthenticated(
                "invalid_session",
                "the session has ended; log in again",
            ));
        }
        audit::record(
            &mut tx,
            caller,
            "user.step_up",
            Some(user_target(user.id)),
            json!({ "session_id": session_id }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(now.saturating_add(STEP_UP_WINDOW_MS))
    }
}

/// Whether the caller may do something that needs a recent step-up (revealing a secret,
/// opening a shell): true for a login session with a step-up in the last
/// [`STEP_UP_WINDOW_MS`], and for callers with no second factor to step up with (users without
/// MFA, API keys, the CLI); false otherwise.
pub async fn has_fresh_step_up(domain: &Domain, caller: &Caller, now: i64) -> DomainResult<bool> {
    let Credential::Session { session_id } = &caller.credential else {
        return Ok(true);
    };
    let Some(user_id) = caller.user_id else {
        return Ok(true);
    };
    let user = domain
        .store
        .user_by_id(user_id)
        .await?
        .ok_or_else(|| DomainError::forbidden("this needs a user account"))?;
    if !user.mfa_enabled {
        return Ok(true);
    }
    let Some(session) = domain.store.auth_session(*session_id).await? else {
        return Ok(false);
    };
    Ok(session
        .step_up_at
        .is_some_and(|at| now.saturating_sub(at) <= STEP_UP_WINDOW_MS && at <= now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reap3r_store::Uuid;

    #[test]
    fn challenge_attempts_are_limited() {
        let user_id = Uuid::new_v4();
        assert_eq!(
            challenge_verdict(ChallengeCheck::Open {
                user_id,
                attempts: 5
            })
            .unwrap(),
            user_id
        );
        assert!(matches!(
            challenge_verdict(ChallengeCheck::TooManyAttempts),
            Err(DomainError::TooMany {
                code: "too_many_attempts",
                ..
            })
        ));
        for gone in [
            ChallengeCheck::Unknown,
            ChallengeCheck::Expired,
            ChallengeCheck::Used,
        ] {
            assert!(matches!(
                challenge_verdict(gone),
                Err(DomainError::Unauthenticated {
                    code: "invalid_challenge",
                    ..
                })
            ));
        }
    }
}
