//! Organisations and the MSSP model: a provider organisation's users assigned to its customer
//! organisations, where they act with the assigned role.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_store::{Org, OrgAssignment, Uuid};
use serde_json::json;

use super::auth::{Done, done};
use super::{ApiTags, audit, required_text};
use crate::auth::{Auth, Caller};
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Role, RoleName};

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct OrgView {
    pub id: Uuid,
    pub name: String,
    /// The provider organisation, for MSSP customers.
    pub parent_org_id: Option<Uuid>,
    pub created_at: i64,
}

impl From<Org> for OrgView {
    fn from(o: Org) -> Self {
        Self {
            id: o.id,
            name: o.name,
            parent_org_id: o.parent_org_id,
            created_at: o.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct CreateOrgRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    /// Make the new organisation a customer of this provider organisation.
    pub parent_org_id: Option<Uuid>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AssignmentView {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub role: String,
    pub created_at: i64,
}

impl From<OrgAssignment> for AssignmentView {
    fn from(a: OrgAssignment) -> Self {
        Self {
            user_id: a.user_id,
            org_id: a.org_id,
            role: a.role,
            created_at: a.created_at,
        }
    }
}

/// Assigns a user to a customer organisation; `role` is the one they get there, never above the
/// caller's.
#[derive(Debug, Object)]
pub struct AssignRequest {
    /// A user of the provider organisation (the one the request acts in).
    pub user_id: Uuid,
    // No doc comment: on a `$ref` field it becomes an `allOf` (see `RoleName`).
    pub role: RoleName,
}

/// Organisations the caller can see: all for super admins, otherwise their own, the one acted
/// in, and those they are assigned to.
async fn visible_orgs(ctx: &ApiContext, caller: &Caller) -> ApiResult<Vec<Org>> {
    if caller.role == Role::SuperAdmin {
        return Ok(ctx.store.list_orgs().await?);
    }
    let mut ids = vec![caller.home_org, caller.org_id];
    for a in ctx.store.list_user_assignments(caller.account()?).await? {
        ids.push(a.org_id);
    }
    ids.sort();
    ids.dedup();
    let mut orgs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(org) = ctx.store.org(id).await? {
            orgs.push(org);
        }
    }
    orgs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(orgs)
}

/// The customer organisation an assignment is about: super admins may manage any; others only
/// customers of the provider organisation they act in.
async fn managed_customer(ctx: &ApiContext, caller: &Caller, org_id: Uuid) -> ApiResult<Org> {
    let org = ctx
        .store
        .org(org_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    if caller.role == Role::SuperAdmin || org.parent_org_id == Some(caller.org_id) {
        return Ok(org);
    }
    Err(ApiError::not_found("organisation"))
}

pub struct OrgsApi;

#[OpenApi(tag = "ApiTags::Orgs")]
impl OrgsApi {
    /// List the organisations the caller can act in.
    #[oai(path = "/api/orgs", method = "get", operation_id = "listOrgs")]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<OrgView>>> {
        let orgs = visible_orgs(&ctx, auth.caller()).await?;
        Ok(Json(orgs.into_iter().map(OrgView::from).collect()))
    }

    /// Create an organisation (super admins), optionally as a customer of a provider.
    #[oai(path = "/api/orgs", method = "post", operation_id = "createOrg")]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<CreateOrgRequest>,
    ) -> ApiResult<Json<OrgView>> {
        let caller = auth.caller();
        let name = required_text("name", &body.name, 200)?;
        let org = ctx
            .store
            .create_org_under(&name, body.parent_org_id, ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "org.create",
            Some(format!("org:{}", org.id)),
            json!({ "name": org.name, "parent_org_id": org.parent_org_id }),
        )
        .await?;
        Ok(Json(org.into()))
    }

    /// Get one organisation the caller can see.
    #[oai(path = "/api/orgs/:id", method = "get", operation_id = "getOrg")]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<OrgView>> {
        let org = visible_orgs(&ctx, auth.caller())
            .await?
            .into_iter()
            .find(|o| o.id == id.0)
            .ok_or_else(|| ApiError::not_found("organisation"))?;
        Ok(Json(org.into()))
    }

    /// Users assigned to a customer organisation.
    #[oai(
        path = "/api/orgs/:id/assignments",
        method = "get",
        operation_id = "listOrgAssignments"
    )]
    async fn assignments(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Vec<AssignmentView>>> {
        let org = managed_customer(&ctx, auth.caller(), id.0).await?;
        let list = ctx.store.list_org_assignments(org.id).await?;
        Ok(Json(list.into_iter().map(AssignmentView::from).collect()))
    }

    /// Assign a provider user to a customer organisation with a role.
    #[oai(
        path = "/api/orgs/:id/assignments",
        method = "post",
        operation_id = "assignUserToOrg"
    )]
    async fn assign(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<AssignRequest>,
    ) -> ApiResult<Json<AssignmentView>> {
        let caller = auth.caller();
        let org = managed_customer(&ctx, caller, id.0).await?;
        let role = Role::from(body.role);
        if !caller.role.may_grant(role) || role == Role::SuperAdmin {
            return Err(ApiError::forbidden(format!(
                "cannot assign the role {role}"
            )));
        }
        ctx.store
            .user_in_org(caller.org_id, body.user_id)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        let assignment = ctx
            .store
            .assign_user_to_org(body.user_id, org.id, role.as_str(), ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "org.assign",
            Some(format!("org:{}", org.id)),
            json!({ "user_id": body.user_id, "role": role.as_str() }),
        )
        .await?;
        Ok(Json(assignment.into()))
    }

    /// Remove a user's assignment to a customer organisation.
    #[oai(
        path = "/api/orgs/:id/assignments/:user_id",
        method = "delete",
        operation_id = "unassignUserFromOrg"
    )]
    async fn unassign(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        let caller = auth.caller();
        let org = managed_customer(&ctx, caller, id.0).await?;
        ctx.store.unassign_user_from_org(user_id.0, org.id).await?;
        audit(
            &ctx,
            caller,
            "org.unassign",
            Some(format!("org:{}", org.id)),
            json!({ "user_id": user_id.0 }),
        )
        .await?;
        Ok(done())
    }
}
