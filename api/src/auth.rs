//! Who is calling, as HTTP sees it: the security schemes of the spec, finding the credential a
//! request carries and the `X-Reap3r-Org` header; the domain (`reap3r_actors::access`) turns
//! them into a [`Caller`] bound to one organisation and one role.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::{ApiKey, Bearer};
use reap3r_actors::access;
use reap3r_store::Uuid;

use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

/// Header that selects the organisation a request acts in (default: the caller's own).
pub const ORG_HEADER: &str = "X-Reap3r-Org";

pub use reap3r_actors::access::{
    ACCESS_PREFIX, API_KEY_PREFIX, CHALLENGE_PREFIX, REFRESH_PREFIX, hash_secret, new_secret,
};
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

/// Resolves a presented credential to a caller acting in the organisation the `X-Reap3r-Org`
/// header names (if any), or answers 400/401/403/404.
pub async fn authenticate(ctx: &ApiContext, req: &Request, secret: &str) -> ApiResult<Caller> {
    let requested = requested_org(req)?;
    Ok(access::authenticate(&ctx.domain, secret, requested).await?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::{Permission, Role};

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
