//! Sites, companies, folders and tags: named groupings of agents inside an organisation. They
//! share one shape and one implementation; only paths, names and permissions differ.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_store::{Group, GroupKind, GroupUpdate, NewGroup, Uuid};
use serde_json::json;

use super::auth::{Done, done};
use super::{ApiTags, audit, optional_text, required_text};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct GroupView {
    pub id: Uuid,
    pub org_id: Uuid,
    /// site, company, folder or tag.
    pub kind: String,
    pub name: String,
    pub description: Option<String>,
    /// Parent folder (folders only).
    pub parent_id: Option<Uuid>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl From<Group> for GroupView {
    fn from(g: Group) -> Self {
        Self {
            id: g.id,
            org_id: g.org_id,
            kind: g.kind.as_str().into(),
            name: g.name,
            description: g.description,
            parent_id: g.parent_id,
            created_at: g.created_at,
            updated_at: g.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct CreateGroupRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    /// Parent folder (folders only).
    pub parent_id: Option<Uuid>,
}

#[derive(Debug, Object)]
pub struct UpdateGroupRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: Option<String>,
    /// An empty string clears the description.
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    /// Move a folder under another folder.
    pub parent_id: Option<Uuid>,
    /// Move a folder to the top level.
    #[oai(default)]
    pub clear_parent: bool,
}

async fn list(ctx: &ApiContext, auth: &Auth, kind: GroupKind) -> ApiResult<Json<Vec<GroupView>>> {
    let groups = ctx.store.list_groups(kind, auth.caller().org_id).await?;
    Ok(Json(groups.into_iter().map(GroupView::from).collect()))
}

async fn create(
    ctx: &ApiContext,
    auth: &Auth,
    kind: GroupKind,
    body: &CreateGroupRequest,
) -> ApiResult<Json<GroupView>> {
    let caller = auth.caller();
    let new = NewGroup {
        name: required_text("name", &body.name, 200)?,
        description: optional_text("description", body.description.as_deref(), 2000)?,
        parent_id: body.parent_id,
    };
    let group = ctx
        .store
        .create_group(kind, caller.org_id, &new, ctx.now_ms())
        .await?;
    audit(
        ctx,
        caller,
        &format!("{}.create", kind.as_str()),
        Some(format!("{}:{}", kind.as_str(), group.id)),
        json!({ "name": group.name }),
    )
    .await?;
    Ok(Json(group.into()))
}

async fn get(
    ctx: &ApiContext,
    auth: &Auth,
    kind: GroupKind,
    id: Uuid,
) -> ApiResult<Json<GroupView>> {
    let group = ctx
        .store
        .group(kind, auth.caller().org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(kind.as_str()))?;
    Ok(Json(group.into()))
}

async fn update(
    ctx: &ApiContext,
    auth: &Auth,
    kind: GroupKind,
    id: Uuid,
    body: &UpdateGroupRequest,
) -> ApiResult<Json<GroupView>> {
    let caller = auth.caller();
    let parent_id = match (body.parent_id, body.clear_parent) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "give parent_id or clear_parent, not both",
            ));
        }
        (Some(p), false) => Some(Some(p)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let update = GroupUpdate {
        name: body
            .name
            .as_deref()
            .map(|n| required_text("name", n, 200))
            .transpose()?,
        description: body
            .description
            .as_deref()
            .map(|d| optional_text("description", Some(d), 2000))
            .transpose()?,
        parent_id,
    };
    let group = ctx
        .store
        .update_group(kind, caller.org_id, id, &update, ctx.now_ms())
        .await
        .map_err(|e| ApiError::from_store(e, kind.as_str()))?;
    audit(
        ctx,
        caller,
        &format!("{}.update", kind.as_str()),
        Some(format!("{}:{id}", kind.as_str())),
        json!({ "name": group.name }),
    )
    .await?;
    Ok(Json(group.into()))
}

async fn delete(ctx: &ApiContext, auth: &Auth, kind: GroupKind, id: Uuid) -> ApiResult<Json<Done>> {
    let caller = auth.caller();
    ctx.store
        .delete_group(kind, caller.org_id, id)
        .await
        .map_err(|e| ApiError::from_store(e, kind.as_str()))?;
    audit(
        ctx,
        caller,
        &format!("{}.delete", kind.as_str()),
        Some(format!("{}:{id}", kind.as_str())),
        json!({}),
    )
    .await?;
    Ok(done())
}

/// One API type per grouping kind, all delegating to the functions above.
macro_rules! group_api {
    (
        $api:ident, $kind:expr,
        $collection:literal, $item:literal,
        [$list_id:literal, $create_id:literal, $get_id:literal, $update_id:literal, $delete_id:literal],
        [$list_doc:literal, $create_doc:literal, $get_doc:literal, $update_doc:literal, $delete_doc:literal]
    ) => {
        pub struct $api;

        #[OpenApi(tag = "ApiTags::Groups")]
        impl $api {
            #[doc = $list_doc]
            #[oai(path = $collection, method = "get", operation_id = $list_id)]
            async fn list(
                &self,
                ctx: Data<&ApiContext>,
                auth: Auth,
            ) -> ApiResult<Json<Vec<GroupView>>> {
                list(&ctx, &auth, $kind).await
            }

            #[doc = $create_doc]
            #[oai(path = $collection, method = "post", operation_id = $create_id)]
            async fn create(
                &self,
                ctx: Data<&ApiContext>,
                auth: Auth,
                body: Json<CreateGroupRequest>,
            ) -> ApiResult<Json<GroupView>> {
                create(&ctx, &auth, $kind, &body).await
            }

            #[doc = $get_doc]
            #[oai(path = $item, method = "get", operation_id = $get_id)]
            async fn get(
                &self,
                ctx: Data<&ApiContext>,
                auth: Auth,
                id: Path<Uuid>,
            ) -> ApiResult<Json<GroupView>> {
                get(&ctx, &auth, $kind, id.0).await
            }

            #[doc = $update_doc]
            #[oai(path = $item, method = "patch", operation_id = $update_id)]
            async fn update(
                &self,
                ctx: Data<&ApiContext>,
                auth: Auth,
                id: Path<Uuid>,
                body: Json<UpdateGroupRequest>,
            ) -> ApiResult<Json<GroupView>> {
                update(&ctx, &auth, $kind, id.0, &body).await
            }

            #[doc = $delete_doc]
            #[oai(path = $item, method = "delete", operation_id = $delete_id)]
            async fn delete(
                &self,
                ctx: Data<&ApiContext>,
                auth: Auth,
                id: Path<Uuid>,
            ) -> ApiResult<Json<Done>> {
                delete(&ctx, &auth, $kind, id.0).await
            }
        }
    };
}

group_api!(
    SitesApi,
    GroupKind::Site,
    "/api/sites",
    "/api/sites/:id",
    [
        "listSites",
        "createSite",
        "getSite",
        "updateSite",
        "deleteSite"
    ],
    [
        "List sites.",
        "Create a site.",
        "Get a site.",
        "Rename or describe a site.",
        "Delete a site; its agents keep running, unassigned."
    ]
);
group_api!(
    CompaniesApi,
    GroupKind::Company,
    "/api/companies",
    "/api/companies/:id",
    [
        "listCompanies",
        "createCompany",
        "getCompany",
        "updateCompany",
        "deleteCompany"
    ],
    [
        "List client companies.",
        "Create a client company.",
        "Get a client company.",
        "Rename or describe a client company.",
        "Delete a client company; its agents keep running, unassigned."
    ]
);
group_api!(
    FoldersApi,
    GroupKind::Folder,
    "/api/folders",
    "/api/folders/:id",
    [
        "listFolders",
        "createFolder",
        "getFolder",
        "updateFolder",
        "deleteFolder"
    ],
    [
        "List folders.",
        "Create a folder, optionally inside another.",
        "Get a folder.",
        "Rename, describe or move a folder.",
        "Delete an empty-of-subfolders folder; its agents move to no folder."
    ]
);
group_api!(
    TagsApi,
    GroupKind::Tag,
    "/api/tags",
    "/api/tags/:id",
    ["listTags", "createTag", "getTag", "updateTag", "deleteTag"],
    [
        "List tags.",
        "Create a tag.",
        "Get a tag.",
        "Rename or describe a tag.",
        "Delete a tag and remove it from every agent."
    ]
);
