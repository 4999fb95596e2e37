//! Turning a presented credential (a session access token or an API key) into a [`Caller`]:
//! checks it is known, live and its account active, stamps its last use (at most once a
//! minute), and picks the organisation the request acts in and the role held there (the
//! caller's own, or a requested one: any for super admins, assigned customer organisations for
//! MSSP staff; an API key acts only in its own).

use reap3r_store::{ApiKey, AuthSession, User, Uuid};

use super::caller::{Caller, Credential};
use super::roles::{Permission, Role};
use super::secrets::{API_KEY_PREFIX, hash_secret};
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};

/// How often a session's or key's last-used stamp is written at most.
pub const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Longest credential looked at; anything longer is refused before hashing.
pub const MAX_CREDENTIAL_LEN: usize = 256;

fn bad_credential() -> DomainError {
    DomainError::unauthenticated(
        "unauthenticated",
        "missing, unknown, expired or revoked credential",
    )
}

fn check_session(session: &AuthSession, now: i64) -> DomainResult<()> {
    if session.revoked_at.is_some() || session.access_expires_at <= now {
        return Err(bad_credential());
    }
    Ok(())
}

fn check_api_key(key: &ApiKey, now: i64) -> DomainResult<()> {
    if key.expires_at.is_some_and(|t| t <= now) {
        return Err(DomainError::unauthenticated(
            "api_key_expired",
            "the API key has expired",
        ));
    }
    Ok(())
}

/// Whether a stamp last written at `last` is due again at `now`.
fn touch_due(last: Option<i64>, now: i64) -> bool {
    last.is_none_or(|t| now - t >= TOUCH_INTERVAL_MS)
}

async fn active_user(domain: &Domain, user_id: Uuid) -> DomainResult<User> {
    let user = domain
        .store
        .user_by_id(user_id)
        .await?
        .ok_or_else(bad_credential)?;
    if user.status != "active" {
        return Err(DomainError::unauthenticated(
            "account_suspended",
            "the account is suspended",
        ));
    }
    Ok(user)
}

/// The organisation a request acts in: an API key's own (it acts nowhere else), else the
/// requested one, else the user's home.
fn acting_org(user: &User, key_org: Option<Uuid>, requested: Option<Uuid>) -> DomainResult<Uuid> {
    match (key_org, requested) {
        (Some(key_org), Some(org)) if org != key_org => Err(DomainError::forbidden(
            "this API key acts only in its own organisation",
        )),
        (Some(key_org), _) => Ok(key_org),
        (None, Some(org)) => Ok(org),
        (None, None) => Ok(user.org_id),
    }
}

/// Resolves a presented credential to a caller acting in `requested_org` (or its default).
pub async fn authenticate(
    domain: &Domain,
    secret: &str,
    requested_org: Option<Uuid>,
) -> DomainResult<Caller> {
    if secret.len() > MAX_CREDENTIAL_LEN {
        return Err(bad_credential());
    }
    let now = domain.now_ms();
    let hash = hash_secret(secret);
    let (user, credential, key_org) = if secret.starts_with(API_KEY_PREFIX) {
        let key = domain
            .store
            .api_key_by_hash(&hash)
            .await?
            .ok_or_else(bad_credential)?;
        check_api_key(&key, now)?;
        // The stamp was just read; skip the write (a write lock on SQLite) while it is fresh.
        if touch_due(key.last_used_at, now) {
            domain
                .store
                .touch_api_key(key.id, now, TOUCH_INTERVAL_MS)
                .await?;
        }
        let user = active_user(domain, key.user_id).await?;
        let scopes = key
            .scopes
            .iter()
            .filter_map(|s| s.parse::<Permission>().ok())
            .collect();
        (
            user,
            Credential::ApiKey {
                key_id: key.id,
                scopes,
            },
            Some(key.org_id),
        )
    } else {
        let session = domain
            .store
            .session_by_access_hash(&hash)
            .await?
            .ok_or_else(bad_credential)?;
        check_session(&session, now)?;
        if touch_due(Some(session.last_used_at), now) {
            domain
                .store
                .touch_auth_session(session.id, now, TOUCH_INTERVAL_MS)
                .await?;
        }
        let user = active_user(domain, session.user_id).await?;
        (
            user,
            Credential::Session {
                session_id: session.id,
            },
            None,
        )
    };
    let org_id = acting_org(&user, key_org, requested_org)?;
    let role = role_in_org(domain, &user, org_id).await?;
    Ok(Caller {
        user_id: Some(user.id),
        email: user.email,
        home_org: user.org_id,
        org_id,
        role,
        credential,
    })
}

/// The user's role in an organisation: their own role at home, everywhere for super admins,
/// and the assigned role in customer organisations (MSSP).
pub async fn role_in_org(domain: &Domain, user: &User, org_id: Uuid) -> DomainResult<Role> {
    let home_role: Role = user
        .role
        .parse()
        .map_err(|_| DomainError::forbidden("the account has an unknown role"))?;
    if org_id == user.org_id {
        return Ok(home_role);
    }
    if home_role == Role::SuperAdmin {
        return match domain.store.org(org_id).await? {
            Some(_) => Ok(Role::SuperAdmin),
            None => Err(DomainError::NotFound("organisation")),
        };
    }
    match domain.store.user_org_role(user.id, org_id).await? {
        Some(role) => role
            .parse()
            .map_err(|_| DomainError::forbidden("the assignment has an unknown role")),
        None => Err(DomainError::forbidden(
            "no access to the requested organisation",
        )),
    }
}

/// Whether the credential a long-lived stream (an event or shell WebSocket) was opened with
/// still holds at `now`: a login session not revoked or expired, an API key not deleted or
/// expired. A database hiccup counts as holding: live streams are not cut by it, the next
/// check decides.
pub async fn credential_holds(domain: &Domain, caller: &Caller, now: i64) -> bool {
    let holds = match &caller.credential {
        Credential::Session { session_id } => domain
            .store
            .auth_session(*session_id)
            .await
            .map(|s| s.is_some_and(|s| s.revoked_at.is_none() && s.refresh_expires_at > now)),
        Credential::ApiKey { key_id, .. } => domain
            .store
            .api_key(*key_id)
            .await
            .map(|k| k.is_some_and(|k| k.expires_at.is_none_or(|at| at > now))),
        Credential::Cli => Ok(true),
    };
    holds.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(org: Uuid) -> User {
        User {
            id: Uuid::new_v4(),
            org_id: org,
            email: "a@b".into(),
            password_hash: String::new(),
            role: "technician".into(),
            status: "active".into(),
            created_at: 0,
            display_name: None,
            mfa_secret: None,
            mfa_enabled: false,
            mfa_last_step: None,
            updated_at: None,
        }
    }

    #[test]
    fn keys_act_only_in_their_org_and_sessions_where_asked() {
        let (home, other, key_org) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let u = user(home);
        assert_eq!(acting_org(&u, None, None).unwrap(), home);
        assert_eq!(acting_org(&u, None, Some(other)).unwrap(), other);
        assert_eq!(acting_org(&u, Some(key_org), None).unwrap(), key_org);
        assert_eq!(
            acting_org(&u, Some(key_org), Some(key_org)).unwrap(),
            key_org
        );
        assert!(matches!(
            acting_org(&u, Some(key_org), Some(other)),
            Err(DomainError::Forbidden { .. })
        ));
    }

    #[test]
    fn stamps_are_written_at_most_once_a_minute() {
        assert!(touch_due(None, 0));
        assert!(!touch_due(Some(1_000), 1_000 + TOUCH_INTERVAL_MS - 1));
        assert!(touch_due(Some(1_000), 1_000 + TOUCH_INTERVAL_MS));
    }
}
