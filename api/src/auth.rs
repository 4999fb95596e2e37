//! Who is calling: bearer session tokens and API keys turned into a [`Caller`] bound to one
//! organisation and one role, plus the random secrets and hashes behind them.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::{ApiKey, Bearer};
use reap3r_store::{ApiKey as StoredApiKey, AuthSession, User, Uuid};

use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Permission, Role};

/// Header that selects the organisation a request acts in (default: the caller's own).
pub const ORG_HEADER: &str = "X-Reap3r-Org";

/// Prefixes make leaked secrets recognisable (and greppable by secret scanners).
pub const ACCESS_PREFIX: &str = "r3a_";
pub const REFRESH_PREFIX: &str = "r3r_";
pub const API_KEY_PREFIX: &str = "r3k_";
pub const CHALLENGE_PREFIX: &str = "r3c_";

/// How often a session's or key's last-used stamp is written at most.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Longest credential looked at; anything longer is refused before hashing.
const MAX_CREDENTIAL_LEN: usize = 256;

/// A fresh random secret: prefix + 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|_| ApiError::unavailable("the system random source failed"))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Secrets are 256-bit random, so a fast hash is enough; only the hash is stored.
pub fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

pub use reap3r_actors::access::{Caller, Credential};

/// A session access token in `Authorization: Bearer`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "caller_from_bearer")]
pub struct BearerAuth(pub Caller);

/// An API key in the `X-API-Key` header (API keys are also accepted as bearer tokens).
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "caller_from_api_key"
)]
pub struct ApiKeyAuth(pub Caller);

/// Either credential. The guard middleware has already authenticated the request; these
/// schemes document the credentials in the spec and hand the caller to the handler.
#[derive(SecurityScheme)]
pub enum Auth {
    Bearer(BearerAuth),
    ApiKey(ApiKeyAuth),
}

impl Auth {
    pub fn caller(&self) -> &Caller {
        match self {
            Auth::Bearer(BearerAuth(c)) | Auth::ApiKey(ApiKeyAuth(c)) => c,
        }
    }
}

/// An access token in the `access_token` query parameter: only for the WebSocket, since
/// browsers cannot set headers on a WebSocket upgrade.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "access_token",
    key_in = "query",
    checker = "caller_from_api_key"
)]
pub struct QueryTokenAuth(pub Caller);

/// The WebSocket's credentials: the usual two, or the query parameter.
#[derive(SecurityScheme)]
pub enum WsAuth {
    Bearer(BearerAuth),
    ApiKey(ApiKeyAuth),
    Query(QueryTokenAuth),
}

impl WsAuth {
    pub fn caller(&self) -> &Caller {
        match self {
            WsAuth::Bearer(BearerAuth(c))
            | WsAuth::ApiKey(ApiKeyAuth(c))
            | WsAuth::Query(QueryTokenAuth(c)) => c,
        }
    }
}

async fn caller_from_bearer(req: &Request, _bearer: Bearer) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

async fn caller_from_api_key(req: &Request, _key: ApiKey) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

/// The credential a request carries, if any: `Authorization: Bearer`, `X-API-Key`, or (for the
/// WebSocket only, since browsers cannot set headers there) an `access_token` query parameter.
pub fn presented_credential(req: &Request, allow_query: bool) -> Option<String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(auth) = header("authorization") {
        let mut parts = auth.splitn(2, ' ');
        let scheme = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default().trim();
        if scheme.eq_ignore_ascii_case("bearer") && !value.is_empty() {
            return Some(value.to_owned());
        }
    }
    if let Some(key) = header("x-api-key") {
        return Some(key.to_owned());
    }
    if allow_query {
        return req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "access_token")
                .map(|(_, v)| v.to_owned())
        });
    }
    None
}

/// Resolves a presented credential to a caller, or answers 401/403.
pub async fn authenticate(ctx: &ApiContext, req: &Request, secret: &str) -> ApiResult<Caller> {
    if secret.len() > MAX_CREDENTIAL_LEN {
        return Err(bad_credential());
    }
    let now = ctx.now_ms();
    let hash = hash_secret(secret);
    let (user, credential, key_role_cap) = if secret.starts_with(API_KEY_PREFIX) {
        let key = ctx
            .store
            .api_key_by_hash(&hash)
            .await?
            .ok_or_else(bad_credential)?;
        check_api_key(&key, now)?;
        // The stamp was just read; skip the write (a write lock on SQLite) while it is fresh.
        if key
            .last_used_at
            .is_none_or(|t| now - t >= TOUCH_INTERVAL_MS)
        {
            ctx.store
                .touch_api_key(key.id, now, TOUCH_INTERVAL_MS)
                .await?;
        }
        let user = active_user(ctx, key.user_id).await?;
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
        let session = ctx
            .store
            .session_by_access_hash(&hash)
            .await?
            .ok_or_else(bad_credential)?;
        check_session(&session, now)?;
        if now - session.last_used_at >= TOUCH_INTERVAL_MS {
            ctx.store
                .touch_auth_session(session.id, now, TOUCH_INTERVAL_MS)
                .await?;
        }
        let user = active_user(ctx, session.user_id).await?;
        (
            user,
            Credential::Session {
                session_id: session.id,
            },
            None,
        )
    };
    let requested = requested_org(req)?;
    // An API key belongs to one organisation and acts only there.
    let org_id = match (key_role_cap, requested) {
        (Some(key_org), Some(org)) if org != key_org => {
            return Err(ApiError::forbidden(
                "this API key acts only in its own organisation",
            ));
        }
        (Some(key_org), _) => key_org,
        (None, Some(org)) => org,
        (None, None) => user.org_id,
    };
    let role = role_in_org(ctx, &user, org_id).await?;
    Ok(Caller {
        user_id: Some(user.id),
        email: user.email,
        home_org: user.org_id,
        org_id,
        role,
        credential,
    })
}

fn bad_credential() -> ApiError {
    ApiError::unauthorized(
        "unauthenticated",
        "missing, unknown, expired or revoked credential",
    )
}

fn check_session(session: &AuthSession, now: i64) -> ApiResult<()> {
    if session.revoked_at.is_some() || session.access_expires_at <= now {
        return Err(bad_credential());
    }
    Ok(())
}

fn check_api_key(key: &StoredApiKey, now: i64) -> ApiResult<()> {
    if key.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::unauthorized(
            "api_key_expired",
            "the API key has expired",
        ));
    }
    Ok(())
}

async fn active_user(ctx: &ApiContext, user_id: Uuid) -> ApiResult<User> {
    let user = ctx
        .store
        .user_by_id(user_id)
        .await?
        .ok_or_else(bad_credential)?;
    if user.status != "active" {
        return Err(ApiError::unauthorized(
            "account_suspended",
            "the account is suspended",
        ));
    }
    Ok(user)
}

fn requested_org(req: &Request) -> ApiResult<Option<Uuid>> {
    match req.headers().get(ORG_HEADER) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{ORG_HEADER} must be an organisation id"))),
    }
}

/// The user's role in an organisation: their own role at home, everywhere for super admins,
/// and the assigned role in customer organisations (MSSP).
pub async fn role_in_org(ctx: &ApiContext, user: &User, org_id: Uuid) -> ApiResult<Role> {
    let home_role: Role = user
        .role
        .parse()
        .map_err(|_| ApiError::forbidden("the account has an unknown role"))?;
    if org_id == user.org_id {
        return Ok(home_role);
    }
    if home_role == Role::SuperAdmin {
        return match ctx.store.org(org_id).await? {
            Some(_) => Ok(Role::SuperAdmin),
            None => Err(ApiError::not_found("organisation")),
        };
    }
    match ctx.store.user_org_role(user.id, org_id).await? {
        Some(role) => role
            .parse()
            .map_err(|_| ApiError::forbidden("the assignment has an unknown role")),
        None => Err(ApiError::forbidden(
            "no access to the requested organisation",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hash_stably() {
        let a = new_secret(ACCESS_PREFIX).unwrap();
        let b = new_secret(ACCESS_PREFIX).unwrap();
        assert!(a.starts_with(ACCESS_PREFIX));
        assert_eq!(a.len(), ACCESS_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    fn caller(role: Role, credential: Credential) -> Caller {
        Caller {
            user_id: Some(Uuid::nil()),
            email: "a@b".into(),
            home_org: Uuid::nil(),
            org_id: Uuid::nil(),
            role,
            credential,
        }
    }

    #[test]
    fn api_key_scopes_narrow_the_role() {
        let key = Credential::ApiKey {
            key_id: Uuid::nil(),
            scopes: vec![Permission::AgentList, Permission::UserCreate],
        };
        let c = caller(Role::Technician, key);
        assert!(c.allows(Permission::AgentList));
        // In scope but not in the role.
        assert!(!c.allows(Permission::UserCreate));
        // In the role but not in scope.
        assert!(!c.allows(Permission::AgentView));
        let s = caller(
            Role::Technician,
            Credential::Session {
                session_id: Uuid::nil(),
            },
        );
        assert!(s.allows(Permission::AgentView));
    }
}
