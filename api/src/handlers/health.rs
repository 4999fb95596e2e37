//! Liveness (`/api/health`) and readiness (`/api/ready`: database reachable, QUIC listening).

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::context::ApiContext;
use crate::error::ErrorBody;

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct HealthView {
    /// Always `ok` when the process answers.
    pub status: String,
    pub version: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ReadinessView {
    /// `ready` or `not_ready`.
    pub status: String,
    pub database: bool,
    pub quic: bool,
}

#[derive(Debug, ApiResponse)]
pub enum HealthResponse {
    /// The process is up.
    #[oai(status = 200)]
    Up(Json<HealthView>),
    /// Over the client address's rate limit (answered by the guard, as `ApiError` does).
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until a request would pass.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
}

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// Ready to serve agents and operators.
    #[oai(status = 200)]
    Ready(Json<ReadinessView>),
    /// Over the client address's rate limit (answered by the guard, as `ApiError` does).
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until a request would pass.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
    /// A dependency is down; the body says which.
    #[oai(status = 503)]
    NotReady(Json<ReadinessView>),
}

pub struct HealthApi;

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up.
    #[oai(path = "/api/health", method = "get", operation_id = "getHealth")]
    async fn health(&self) -> HealthResponse {
        HealthResponse::Up(Json(HealthView {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    /// Readiness: the database answers and the QUIC gateway is listening.
    #[oai(path = "/api/ready", method = "get", operation_id = "getReady")]
    async fn ready(&self, ctx: Data<&ApiContext>) -> ReadyResponse {
        let database = ctx.store.ping().await.is_ok();
        let quic = ctx.node.quic_listening();
        let ready = database && quic;
        let view = ReadinessView {
            status: if ready { "ready" } else { "not_ready" }.into(),
            database,
            quic,
        };
        if ready {
            ReadyResponse::Ready(Json(view))
        } else {
            ReadyResponse::NotReady(Json(view))
        }
    }
}
