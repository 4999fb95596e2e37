//! API keys for integrations: scoped to permissions the creator holds, optionally expiring,
//! shown once and stored as a hash. A key acts as its owner, narrowed to its scopes. HTTP
//! mapped to the operations of `reap3r_actors::access`.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::access::{CreateApiKey, DeleteApiKey};
use reap3r_store::{ApiKey, Uuid};

use super::ApiTags;
use super::auth::{Done, done};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

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
        let created = CreateApiKey {
            name: body.0.name,
            scopes: body.0.scopes,
            expires_in_s: body.0.expires_in_s,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(CreatedApiKeyView {
            key: created.key.into(),
            secret: created.secret,
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
        DeleteApiKey { key_id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }
}
