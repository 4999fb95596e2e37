//! Login sessions: opening one (with its `auth.login` audit record), refreshing it with token
//! rotation and reuse detection (a refresh token presented twice revokes the session), logging
//! out, and administrators revoking one session or all of a user's.

use reap3r_store::{AuthSession, NewAuthSession, RefreshOutcome, Tx, User, Uuid};
use serde_json::json;

use super::caller::Caller;
use super::login::Origin;
use super::secrets::{ACCESS_PREFIX, REFRESH_PREFIX, hash_secret, new_secret};
use super::settings::AccessSettings;
use super::users::{target_user, user_target};
use crate::audit;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};

/// Longest refresh token looked at, in characters (the API schema says the same number).
pub const MAX_REFRESH_TOKEN_CHARS: usize = 256;

/// A session's token pair, shown once.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub session_id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in_s: i64,
}

/// Opens a session for `user` in `tx` and audits the login there.
pub(crate) async fn open_session(
    tx: &mut Tx,
    settings: &AccessSettings,
    user: &User,
    origin: &Origin,
    now: i64,
) -> DomainResult<Tokens> {
    let access = new_secret(ACCESS_PREFIX)?;
    let refresh = new_secret(REFRESH_PREFIX)?;
    let session = tx
        .create_auth_session(
            &NewAuthSession {
                user_id: user.id,
                org_id: user.org_id,
                access_hash: hash_secret(&access),
                access_expires_at: now + settings.access_ttl_ms,
                refresh_hash: hash_secret(&refresh),
                refresh_expires_at: now + settings.refresh_ttl_ms,
                source_ip: Some(origin.source_ip.clone()),
                user_agent: origin.user_agent.clone(),
            },
            now,
        )
        .await?;
    audit::record_as(
        tx,
        Some(user.org_id),
        &format!("user:{}", user.email),
        "auth.login",
        Some(session_target(session.id)),
        json!({ "source_ip": origin.source_ip }),
        now,
    )
    .await?;
    Ok(tokens(settings, session.id, access, refresh))
}

fn tokens(settings: &AccessSettings, session_id: Uuid, access: String, refresh: String) -> Tokens {
    Tokens {
        session_id,
        access_token: access,
        refresh_token: refresh,
        expires_in_s: settings.access_ttl_ms / 1000,
    }
}

pub fn session_target(id: Uuid) -> String {
    format!("session:{id}")
}

/// What a refresh outcome means for the caller. Pure, so the policy is tested on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Commit the rotation and hand out the new pair.
    Rotated { session_id: Uuid },
    /// Commit the session's revocation with a `auth.refresh_reuse` audit record, and refuse.
    RevokeForReuse { session_id: Uuid, user_id: Uuid },
    /// Nothing changed: refuse with this error.
    Refuse(&'static str, &'static str),
}

impl RefreshVerdict {
    pub fn of(outcome: &RefreshOutcome) -> Self {
        match outcome {
            RefreshOutcome::Rotated(session) => RefreshVerdict::Rotated {
                session_id: session.id,
            },
            RefreshOutcome::Reused {
                session_id,
                user_id,
            } => RefreshVerdict::RevokeForReuse {
                session_id: *session_id,
                user_id: *user_id,
            },
            RefreshOutcome::Expired => RefreshVerdict::Refuse(
                "refresh_token_expired",
                "the refresh token has expired; log in again",
            ),
            RefreshOutcome::Unknown | RefreshOutcome::Revoked => {
                RefreshVerdict::Refuse("invalid_refresh_token", "unknown or revoked refresh token")
            }
        }
    }
}

/// The error a reused refresh token gets, once its session is revoked.
pub fn refresh_reused() -> DomainError {
    DomainError::unauthenticated(
        "refresh_token_reused",
        "this refresh token was already used; the session has been revoked",
    )
}

/// Exchanging a refresh token for a new token pair. The old one stops working; presenting it
/// again is taken as theft and revokes the whole session.
#[derive(Debug, Clone)]
pub struct Refresh {
    pub refresh_token: String,
}

impl Refresh {
    pub async fn run(self, domain: &Domain, settings: &AccessSettings) -> DomainResult<Tokens> {
        let access = new_secret(ACCESS_PREFIX)?;
        let refresh = new_secret(REFRESH_PREFIX)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let outcome = tx
            .rotate_refresh_token(
                &hash_secret(self.refresh_token.trim()),
                &hash_secret(&access),
                now + settings.access_ttl_ms,
                &hash_secret(&refresh),
                now + settings.refresh_ttl_ms,
                now,
            )
            .await?;
        match RefreshVerdict::of(&outcome) {
            RefreshVerdict::Rotated { session_id } => {
                domain.commit(tx).await?;
                Ok(tokens(settings, session_id, access, refresh))
            }
            RefreshVerdict::RevokeForReuse {
                session_id,
                user_id,
            } => {
                let org = tx.user_by_id(user_id).await?.map(|u| u.org_id);
                audit::record_as(
                    &mut tx,
                    org,
                    "system",
                    "auth.refresh_reuse",
                    Some(session_target(session_id)),
                    json!({ "user_id": user_id, "revoked": true }),
                    now,
                )
                .await?;
                domain.commit(tx).await?;
                Err(refresh_reused())
            }
            // Nothing was written; dropping the transaction rolls back.
            RefreshVerdict::Refuse(code, message) => {
                Err(DomainError::unauthenticated(code, message))
            }
        }
    }
}

/// Logging out: the caller's session is revoked at once.
#[derive(Debug, Clone, Default)]
pub struct Logout;

impl Logout {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let Some(session_id) = caller.session_id() else {
            return Err(DomainError::bad_request(
                "not_a_session",
                "API keys have no session; delete the key instead",
            ));
        };
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        tx.revoke_auth_session(session_id, "logout", now).await?;
        audit::record(
            &mut tx,
            caller,
            "auth.logout",
            Some(session_target(session_id)),
            json!({}),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// A user's sessions in the caller's organisation, newest first, revoked ones included.
pub async fn user_sessions(
    domain: &Domain,
    caller: &Caller,
    user_id: Uuid,
) -> DomainResult<Vec<AuthSession>> {
    domain
        .store
        .user_in_org(caller.org_id, user_id)
        .await?
        .ok_or(DomainError::NotFound("user"))?;
    Ok(domain.store.list_user_sessions(user_id).await?)
}

/// An administrator revoking one session; its tokens stop working on the next request.
#[derive(Debug, Clone)]
pub struct RevokeSession {
    pub session_id: Uuid,
}

impl RevokeSession {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<()> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let session = tx
            .auth_session(self.session_id)
            .await?
            .filter(|s| s.org_id == caller.org_id)
            .ok_or(DomainError::NotFound("session"))?;
        target_user(&mut tx, caller, session.user_id).await?;
        tx.revoke_auth_session(self.session_id, "revoked_by_admin", now)
            .await?;
        audit::record(
            &mut tx,
            caller,
            "session.revoke",
            Some(session_target(self.session_id)),
            json!({ "user_id": session.user_id }),
            now,
        )
        .await?;
        domain.commit(tx).await
    }
}

/// An administrator revoking every session of a user; answers how many were live.
#[derive(Debug, Clone)]
pub struct RevokeUserSessions {
    pub user_id: Uuid,
}

impl RevokeUserSessions {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<u64> {
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        target_user(&mut tx, caller, self.user_id).await?;
        let revoked = tx
            .revoke_user_sessions(self.user_id, "revoked_by_admin", now)
            .await?;
        audit::record(
            &mut tx,
            caller,
            "session.revoke_all",
            Some(user_target(self.user_id)),
            json!({ "revoked": revoked }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_revokes_and_other_refusals_change_nothing() {
        let (session_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            RefreshVerdict::of(&RefreshOutcome::Reused {
                session_id,
                user_id
            }),
            RefreshVerdict::RevokeForReuse {
                session_id,
                user_id
            }
        );
        assert_eq!(
            RefreshVerdict::of(&RefreshOutcome::Expired),
            RefreshVerdict::Refuse(
                "refresh_token_expired",
                "the refresh token has expired; log in again"
            )
        );
        for outcome in [RefreshOutcome::Unknown, RefreshOutcome::Revoked] {
            assert!(matches!(
                RefreshVerdict::of(&outcome),
                RefreshVerdict::Refuse("invalid_refresh_token", _)
            ));
        }
    }
}
