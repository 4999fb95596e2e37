//! `/api/alerting/silences`: silences (matching alerts are not notified between start and end;
//! they stay visible as alert events), mapped to the routing operations.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::notify::routing::{
    self as routing, CreateRouting, DeleteRouting, Matcher, Saved, SilenceSpec, UpdateRouting,
};
use reap3r_store::Uuid;

use super::ApiTags;
use super::auth::{Done, done};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

#[derive(Debug, Clone, Object)]
pub struct MatcherBody {
    /// rule, agent, tag, severity or org.
    #[oai(validator(max_length = 16))]
    pub kind: String,
    /// An id (rule, agent, org), a tag name or a severity name.
    #[oai(validator(max_length = 200))]
    pub value: String,
}

#[derive(Debug, Object)]
pub struct SilenceRequest {
    /// All must match (1 to 16).
    #[oai(validator(min_items = 1, max_items = 16))]
    pub matchers: Vec<MatcherBody>,
    /// Start, in Unix milliseconds; default now.
    pub starts_at_ms: Option<i64>,
    /// End, in Unix milliseconds (at most a year after the start).
    pub ends_at_ms: i64,
    /// Why (shown with the silence).
    #[oai(validator(max_length = 2000, pattern = r"\S"))]
    pub comment: String,
}

impl SilenceRequest {
    fn spec(self, now_ms: i64) -> ApiResult<SilenceSpec> {
        Ok(SilenceSpec {
            matchers: self
                .matchers
                .iter()
                .map(|m| Matcher::parse(&m.kind, &m.value))
                .collect::<Result<_, _>>()?,
            starts_at_ms: self.starts_at_ms.unwrap_or(now_ms),
            ends_at_ms: self.ends_at_ms,
            comment: self.comment,
        })
    }
}

#[derive(Debug, Object)]
pub struct SilenceView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub matchers: Vec<MatcherBody>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub comment: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Saved<SilenceSpec>> for SilenceView {
    fn from(s: Saved<SilenceSpec>) -> Self {
        Self {
            id: s.id,
            org_id: s.org_id,
            matchers: s
                .spec
                .matchers
                .iter()
                .map(|m| {
                    let (kind, value) = m.parts();
                    MatcherBody {
                        kind: kind.into(),
                        value,
                    }
                })
                .collect(),
            starts_at_ms: s.spec.starts_at_ms,
            ends_at_ms: s.spec.ends_at_ms,
            comment: s.spec.comment,
            created_by: s.created_by,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

pub struct AlertingSilencesApi;

#[OpenApi(tag = "ApiTags::Alerting")]
impl AlertingSilencesApi {
    /// List the organisation's silences, expired ones included.
    #[oai(
        path = "/api/alerting/silences",
        method = "get",
        operation_id = "listSilences"
    )]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<SilenceView>>> {
        let all = routing::list_routing::<SilenceSpec>(&ctx.domain, auth.caller()).await?;
        Ok(Json(all.into_iter().map(SilenceView::from).collect()))
    }

    /// Create a silence.
    #[oai(
        path = "/api/alerting/silences",
        method = "post",
        operation_id = "createSilence"
    )]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<SilenceRequest>,
    ) -> ApiResult<Json<SilenceView>> {
        let saved = CreateRouting {
            spec: body.0.spec(ctx.domain.now_ms())?,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(saved.into()))
    }

    /// Get a silence.
    #[oai(
        path = "/api/alerting/silences/:id",
        method = "get",
        operation_id = "getSilence"
    )]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<SilenceView>> {
        let saved = routing::get_routing::<SilenceSpec>(&ctx.domain, auth.caller(), id.0).await?;
        Ok(Json(saved.into()))
    }

    /// Replace a silence (e.g. end it earlier or later).
    #[oai(
        path = "/api/alerting/silences/:id",
        method = "put",
        operation_id = "replaceSilence"
    )]
    async fn replace(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<SilenceRequest>,
    ) -> ApiResult<Json<SilenceView>> {
        let saved = UpdateRouting {
            id: id.0,
            spec: body.0.spec(ctx.domain.now_ms())?,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(saved.into()))
    }

    /// Delete a silence; it ends at once.
    #[oai(
        path = "/api/alerting/silences/:id",
        method = "delete",
        operation_id = "deleteSilence"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        DeleteRouting::<SilenceSpec>::new(id.0)
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }
}
