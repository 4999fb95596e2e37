//! API keys for integrations: scoped to permissions the creator holds, optionally expiring,
//! shown once and stored as a hash. A key acts as its owner, narrowed to its scopes.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_store::{ApiKey, NewApiKey, Uuid};
use serde_json::json;

use super::auth::{Done, done};
use super::{ApiTags, audit, required_text};
use crate::auth::{API_KEY_PREFIX, Auth, hash_secret, new_secret};
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::rbac::Permission;

const MAX_LIFETIME_S: i64 = 2 * 365 * 24 * 3600;

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The user the key acts as.
    pub user_id: Uuid,
    pub name: String,
    /// First characters of the key, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            org_id: k.org_id,
            user_id: k.user_id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes,
            expires_at: k.expires_at,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct CreateApiKeyRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    /// Permissions the key may use, e.g. `agent:list`; each must be held by the creator.
    #[oai(validator(min_items = 1, max_items = 64))]
    pub scopes: Vec<String>,
    /// Lifetime in seconds (60 to two years); never expires when absent.
    #[oai(validator(minimum(value = "60"), maximum(value = "63072000")))]
    pub expires_in_s: Option<i64>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreatedApiKeyView {
    pub key: ApiKeyView,
    /// The key. Shown only now; send it as `X-API-Key` or as a bearer token.
    pub secret: String,
}

pub struct ApiKeysApi;

#[OpenApi(tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// List the organisation's API keys (never the keys themselves).
    #[oai(path = "/api/api-keys", method = "get", operation_id = "listApiKeys")]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<ApiKeyView>>> {
        let keys = ctx.store.list_api_keys(auth.caller().org_id).await?;
        Ok(Json(keys.into_iter().map(ApiKeyView::from).collect()))
    }

    /// Create an API key acting as the caller with the given scopes.
    #[oai(path = "/api/api-keys", method = "post", operation_id = "createApiKey")]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<CreateApiKeyRequest>,
    ) -> ApiResult<Json<CreatedApiKeyView>> {
        let caller = auth.caller();
        if caller.session_id().is_none() {
            return Err(ApiError::forbidden(
                "API keys are created from a login session",
            ));
        }
        let name = required_text("name", &body.name, 200)?;
        if body.scopes.is_empty() {
            return Err(ApiError::invalid(
                "scopes must name at least one permission",
            ));
        }
        let mut scopes = Vec::with_capacity(body.scopes.len());
        for s in &body.scopes {
            let p: Permission = s
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(format!("unknown permission {s:?}")))?;
            if !caller.allows(p) {
                return Err(ApiError::forbidden(format!(
                    "you cannot give a key {p}, which you do not hold"
                )));
            }
            scopes.push(p.as_str().to_owned());
        }
        scopes.sort();
        scopes.dedup();
        let now = ctx.now_ms();
        let expires_at = match body.expires_in_s {
            None => None,
            Some(s) if (60..=MAX_LIFETIME_S).contains(&s) => Some(now + s * 1000),
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "expires_in_s must be between 60 and {MAX_LIFETIME_S}"
                )));
            }
        };
        let secret = new_secret(API_KEY_PREFIX)?;
        let key = ctx
            .store
            .create_api_key(
                &NewApiKey {
                    org_id: caller.org_id,
                    user_id: caller.account()?,
                    name,
                    prefix: secret.chars().take(API_KEY_PREFIX.len() + 8).collect(),
                    key_hash: hash_secret(&secret),
                    scopes,
                    expires_at,
                },
                now,
            )
            .await?;
        audit(
            &ctx,
            caller,
            "api_key.create",
            Some(format!("api_key:{}", key.id)),
            json!({ "name": key.name, "scopes": key.scopes, "expires_at": key.expires_at }),
        )
        .await?;
        Ok(Json(CreatedApiKeyView {
            key: key.into(),
            secret,
        }))
    }

    /// Delete an API key; it stops working on the next request.
    #[oai(
        path = "/api/api-keys/:id",
        method = "delete",
        operation_id = "deleteApiKey"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        let caller = auth.caller();
        ctx.store
            .delete_api_key(caller.org_id, id.0)
            .await
            .map_err(|e| ApiError::from_store(e, "API key"))?;
        audit(
            &ctx,
            caller,
            "api_key.delete",
            Some(format!("api_key:{}", id.0)),
            json!({}),
        )
        .await?;
        Ok(done())
    }
}
