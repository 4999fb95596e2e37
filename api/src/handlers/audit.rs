//! The audit log: filtered reads, and verification of the BLAKE3 hash chain.

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::audit::{self, ListAudit};
use reap3r_store::{AuditRecord, Uuid};

use super::ApiTags;
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditEntryView {
    pub seq: i64,
    pub ts: i64,
    pub org_id: Option<Uuid>,
    /// `user:<email>`, `api_key:<id>:<email>`, `cli` or `system`.
    pub actor: String,
    /// e.g. `agent.approve`, `user.create`.
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(r: AuditRecord) -> Self {
        Self {
            seq: r.seq,
            ts: r.ts,
            org_id: r.org_id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            details: r.details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ChainReportView {
    /// True when every link checks out.
    pub intact: bool,
    /// Records checked.
    pub checked: u64,
    /// The first record whose link is broken (changed, removed or inserted rows).
    pub first_broken_seq: Option<i64>,
}

pub struct AuditApi;

#[OpenApi(tag = "ApiTags::Audit")]
impl AuditApi {
    /// Audit records of the organisation, newest first.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/audit-logs",
        method = "get",
        operation_id = "listAuditLogs"
    )]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// Exact actor, e.g. `user:ops@example.com`.
        #[oai(validator(max_length = 400))]
        actor: Query<Option<String>>,
        /// Exact action, e.g. `agent.approve`.
        #[oai(validator(max_length = 100))]
        action: Query<Option<String>>,
        /// Exact target, e.g. `agent:<id>`.
        #[oai(validator(max_length = 200))]
        target: Query<Option<String>>,
        /// From this time (unix ms).
        since: Query<Option<i64>>,
        /// Until this time (unix ms).
        until: Query<Option<i64>>,
        /// Page cursor: only records with a smaller seq.
        before_seq: Query<Option<i64>>,
        /// 1 to 10000, default 100.
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
        limit: Query<Option<i64>>,
        /// Super admins only: records of every organisation and installation-wide ones.
        all_orgs: Query<Option<bool>>,
    ) -> ApiResult<Json<Vec<AuditEntryView>>> {
        let records = ListAudit {
            actor: actor.0,
            action: action.0,
            target: target.0,
            since: since.0,
            until: until.0,
            before_seq: before_seq.0,
            limit: limit.0,
            all_orgs: all_orgs.0.unwrap_or(false),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(
            records.into_iter().map(AuditEntryView::from).collect(),
        ))
    }

    /// Recompute the hash chain over the whole log (all organisations; super admins) and report
    /// the first broken link.
    #[oai(
        path = "/api/audit-logs/verify",
        method = "get",
        operation_id = "verifyAuditLog"
    )]
    async fn verify(
        &self,
        ctx: Data<&ApiContext>,
        _auth: Auth,
    ) -> ApiResult<Json<ChainReportView>> {
        let report = audit::verify_chain(&ctx.domain).await?;
        Ok(Json(ChainReportView {
            intact: report.is_intact(),
            checked: report.checked,
            first_broken_seq: report.first_broken,
        }))
    }
}

#[cfg(test)]
mod tests {
    use reap3r_store::MAX_AUDIT_PAGE;
    use serde_json::Value;

    /// The schema's literal page bound is the store's constant.
    #[test]
    fn schema_bounds_are_the_domain_limits() {
        let spec: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let params = spec["paths"]["/api/audit-logs"]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["maximum"], MAX_AUDIT_PAGE as f64);
    }
}
