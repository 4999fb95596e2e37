//! Organisations and the MSSP model: a provider organisation's users assigned to its customer
//! organisations, where they act with the assigned role.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::orgs::{self, AssignToOrg, CreateOrg, UnassignFromOrg};
use reap3r_store::{Org, OrgAssignment, Uuid};

use super::ApiTags;
use super::auth::{Done, done};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;
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

pub struct OrgsApi;

#[OpenApi(tag = "ApiTags::Orgs")]
impl OrgsApi {
    /// List the organisations the caller can act in.
    #[oai(path = "/api/orgs", method = "get", operation_id = "listOrgs")]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<OrgView>>> {
        let orgs = orgs::visible_orgs(&ctx.domain, auth.caller()).await?;
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
        let org = CreateOrg {
            name: body.0.name,
            parent_org_id: body.0.parent_org_id,
        }
        .run(&ctx.domain, auth.caller())
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
        let org = orgs::get_org(&ctx.domain, auth.caller(), id.0).await?;
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
        let list = orgs::list_assignments(&ctx.domain, auth.caller(), id.0).await?;
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
        let assignment = AssignToOrg {
            org_id: id.0,
            user_id: body.user_id,
            role: Role::from(body.role),
        }
        .run(&ctx.domain, auth.caller())
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
        UnassignFromOrg {
            org_id: id.0,
            user_id: user_id.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(done())
    }
}

#[cfg(test)]
mod tests {
    use reap3r_actors::orgs::MAX_ORG_NAME_CHARS;
    use serde_json::Value;

    /// The schema's literal bound is the operation's constant.
    #[test]
    fn schema_bounds_are_the_domain_limits() {
        let spec: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let props = &spec["components"]["schemas"]["CreateOrgRequest"]["properties"];
        assert_eq!(props["name"]["maxLength"], MAX_ORG_NAME_CHARS as u64);
    }
}
