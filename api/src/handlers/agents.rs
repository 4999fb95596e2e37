//! Enrolled agents: filtered, cursor-paginated lists, detail, dashboard stats, approval,
//! revocation, deletion, folder/site/company moves and tagging.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::enrolment::{DeleteAgent, RevokeAgent, SetAgentApproval};
use reap3r_actors::groups::{self, MoveAgent, TagAgent, UntagAgent};
use reap3r_store::{
    Agent, AgentApproval, AgentCursor, AgentFilter, AgentPlacement, AgentStatus, Uuid,
};

use super::auth::{Done, done};
use super::groups::GroupView;
use super::{ApiTags, page_limit};
use crate::auth::{Auth, Caller};
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AgentView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
    /// online, offline, pending, rejected or revoked.
    pub status: String,
    pub capabilities: Vec<String>,
    pub folder_id: Option<Uuid>,
    pub site_id: Option<Uuid>,
    pub company_id: Option<Uuid>,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        Self {
            id: a.id,
            org_id: a.org_id,
            hostname: a.hostname.clone(),
            os: a.os.clone(),
            arch: a.arch.clone(),
            agent_version: a.agent_version.clone(),
            status: a.status().as_str().into(),
            capabilities: a.capabilities.clone(),
            folder_id: a.folder_id,
            site_id: a.site_id,
            company_id: a.company_id,
            enrolled_at: a.enrolled_at,
            last_seen: a.last_seen,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AgentDetail {
    #[oai(flatten)]
    pub agent: AgentView,
    /// Ed25519 public key, hex.
    pub public_key: String,
    pub approval: String,
    pub revoked: bool,
    /// The control-plane node holding the live connection.
    pub node_id: Option<String>,
    pub token_id: Option<Uuid>,
    /// Last reported inventory summary.
    pub inventory: serde_json::Value,
    pub tags: Vec<GroupView>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AgentPage {
    pub items: Vec<AgentView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct CountByOs {
    pub os: String,
    pub count: u64,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AgentStatsView {
    pub total: u64,
    pub online: u64,
    pub offline: u64,
    pub pending: u64,
    pub rejected: u64,
    pub revoked: u64,
    pub by_os: Vec<CountByOs>,
}

/// Where to put the agent: a field left out stays as it is, `null` clears it.
#[derive(Debug, Object)]
pub struct MoveAgentRequest {
    pub folder_id: MaybeUndefined<Uuid>,
    pub site_id: MaybeUndefined<Uuid>,
    pub company_id: MaybeUndefined<Uuid>,
}

#[derive(Debug, Object)]
pub struct TagAgentRequest {
    pub tag_id: Uuid,
}

fn placement(v: &MaybeUndefined<Uuid>) -> Option<Option<Uuid>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(id) => Some(Some(*id)),
    }
}

/// Agent states a list can be filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum StatusFilter {
    Online,
    Offline,
    Pending,
    Rejected,
    Revoked,
}

impl From<StatusFilter> for AgentStatus {
    fn from(s: StatusFilter) -> Self {
        match s {
            StatusFilter::Online => AgentStatus::Online,
            StatusFilter::Offline => AgentStatus::Offline,
            StatusFilter::Pending => AgentStatus::Pending,
            StatusFilter::Rejected => AgentStatus::Rejected,
            StatusFilter::Revoked => AgentStatus::Revoked,
        }
    }
}

fn encode_cursor(a: &Agent) -> String {
    format!("{}_{}", a.enrolled_at, a.id)
}

fn decode_cursor(s: &str) -> ApiResult<AgentCursor> {
    let bad = || ApiError::invalid("cursor is not one this API returned");
    let (at, id) = s.split_once('_').ok_or_else(bad)?;
    Ok(AgentCursor {
        enrolled_at: at.parse().map_err(|_| bad())?,
        id: Uuid::parse_str(id).map_err(|_| bad())?,
    })
}

async fn agent_in_org(ctx: &ApiContext, caller: &Caller, id: Uuid) -> ApiResult<Agent> {
    ctx.store
        .agent_in_org(caller.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))
}

/// Closes an agent's live session through the node, after its access was withdrawn.
fn withdraw(ctx: &ApiContext) -> impl Fn(Uuid, &str) + Send + Sync + '_ {
    |agent_id, reason| ctx.node.withdraw_agent(agent_id, reason)
}

pub struct AgentsApi;

#[OpenApi(tag = "ApiTags::Agents")]
impl AgentsApi {
    /// List agents, filtered, oldest enrolment first, one page at a time.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/api/agents", method = "get", operation_id = "listAgents")]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// Only agents in this state.
        status: Query<Option<StatusFilter>>,
        /// Operating system, e.g. linux (case-insensitive).
        #[oai(validator(max_length = 64))]
        os: Query<Option<String>>,
        /// Only agents with this tag.
        tag: Query<Option<Uuid>>,
        /// Only agents in this folder.
        folder: Query<Option<Uuid>>,
        /// Only agents at this site.
        site: Query<Option<Uuid>>,
        /// Only agents of this company.
        company: Query<Option<Uuid>>,
        /// Case-insensitive part of the hostname.
        #[oai(validator(max_length = 200))]
        search: Query<Option<String>>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 100))]
        cursor: Query<Option<String>>,
        /// 1 to 500, default 100.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<AgentPage>> {
        let limit = page_limit(limit.0, 500)?;
        let filter = AgentFilter {
            status: status.0.map(AgentStatus::from),
            os: os.0.filter(|s| !s.trim().is_empty()),
            tag_id: tag.0,
            folder_id: folder.0,
            site_id: site.0,
            company_id: company.0,
            search: search.0.filter(|s| !s.trim().is_empty()),
        };
        let after = cursor.0.as_deref().map(decode_cursor).transpose()?;
        // One extra row tells whether another page exists.
        let mut agents = ctx
            .store
            .list_agents_page(auth.caller().org_id, &filter, after.as_ref(), limit + 1)
            .await?;
        let more = agents.len() as i64 > limit;
        agents.truncate(limit as usize);
        let next_cursor = more.then(|| agents.last().map(encode_cursor)).flatten();
        Ok(Json(AgentPage {
            items: agents.iter().map(AgentView::from).collect(),
            next_cursor,
        }))
    }

    /// Counts by status and operating system, for dashboards.
    #[oai(
        path = "/api/agents/stats",
        method = "get",
        operation_id = "getAgentStats"
    )]
    async fn stats(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<AgentStatsView>> {
        let s = ctx.store.agent_stats(auth.caller().org_id).await?;
        Ok(Json(AgentStatsView {
            total: s.total,
            online: s.online,
            offline: s.offline,
            pending: s.pending,
            rejected: s.rejected,
            revoked: s.revoked,
            by_os: s
                .by_os
                .into_iter()
                .map(|(os, count)| CountByOs { os, count })
                .collect(),
        }))
    }

    /// One agent with its inventory and tags.
    #[oai(path = "/api/agents/:id", method = "get", operation_id = "getAgent")]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<AgentDetail>> {
        let caller = auth.caller();
        let agent = agent_in_org(&ctx, caller, id.0).await?;
        let tags = groups::agent_tags(&ctx.domain, caller, agent.id).await?;
        Ok(Json(AgentDetail {
            agent: AgentView::from(&agent),
            public_key: hex::encode(agent.public_key),
            approval: agent.approval.as_str().into(),
            revoked: agent.revoked,
            node_id: agent.node_id,
            token_id: agent.token_id,
            inventory: agent.inventory,
            tags: tags.into_iter().map(GroupView::from).collect(),
        }))
    }

    /// Delete an agent: its record goes and its live session is closed. To keep it out for
    /// good, revoke it instead (a deleted agent could enrol again with a valid token).
    #[oai(
        path = "/api/agents/:id",
        method = "delete",
        operation_id = "deleteAgent"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        DeleteAgent { id: id.0 }
            .run(&ctx.domain, auth.caller(), &withdraw(&ctx))
            .await?;
        Ok(done())
    }

    /// Move an agent to a folder, site or company (null clears one).
    #[oai(
        path = "/api/agents/:id/move",
        method = "post",
        operation_id = "moveAgent"
    )]
    async fn move_agent(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<MoveAgentRequest>,
    ) -> ApiResult<Json<AgentView>> {
        let placement = AgentPlacement {
            folder_id: placement(&body.folder_id),
            site_id: placement(&body.site_id),
            company_id: placement(&body.company_id),
        };
        let agent = MoveAgent {
            agent_id: id.0,
            placement,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(AgentView::from(&agent)))
    }

    /// Approve a pending agent; it is let in at its next connection attempt.
    #[oai(
        path = "/api/agents/:id/approve",
        method = "post",
        operation_id = "approveAgent"
    )]
    async fn approve(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<AgentView>> {
        set_approval(&ctx, auth.caller(), id.0, AgentApproval::Approved).await
    }

    /// Reject an agent; a live session is closed.
    #[oai(
        path = "/api/agents/:id/reject",
        method = "post",
        operation_id = "rejectAgent"
    )]
    async fn reject(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<AgentView>> {
        set_approval(&ctx, auth.caller(), id.0, AgentApproval::Rejected).await
    }

    /// Revoke an agent for good; a live session is closed and it can never connect again.
    #[oai(
        path = "/api/agents/:id/revoke",
        method = "post",
        operation_id = "revokeAgent"
    )]
    async fn revoke(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<AgentView>> {
        let agent = RevokeAgent { id: id.0 }
            .run(&ctx.domain, auth.caller(), &withdraw(&ctx))
            .await?;
        Ok(Json(AgentView::from(&agent)))
    }

    /// Put a tag on an agent.
    #[oai(
        path = "/api/agents/:id/tags",
        method = "post",
        operation_id = "tagAgent"
    )]
    async fn tag(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<TagAgentRequest>,
    ) -> ApiResult<Json<Done>> {
        TagAgent {
            agent_id: id.0,
            tag_id: body.tag_id,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(done())
    }

    /// Take a tag off an agent.
    #[oai(
        path = "/api/agents/:id/tags/:tag_id",
        method = "delete",
        operation_id = "untagAgent"
    )]
    async fn untag(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        tag_id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        UntagAgent {
            agent_id: id.0,
            tag_id: tag_id.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(done())
    }
}

async fn set_approval(
    ctx: &ApiContext,
    caller: &Caller,
    id: Uuid,
    approval: AgentApproval,
) -> ApiResult<Json<AgentView>> {
    let agent = SetAgentApproval { id, approval }
        .run(&ctx.domain, caller, &withdraw(ctx))
        .await?;
    Ok(Json(AgentView::from(&agent)))
}
