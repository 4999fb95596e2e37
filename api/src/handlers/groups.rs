//! Sites, companies, folders and tags: named groupings of agents inside an organisation. They
//! share one shape and one implementation; only paths, names and permissions differ.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::groups::{self, CreateGroup, DeleteGroup, UpdateGroup};
use reap3r_store::{Group, GroupKind, Uuid};

use super::ApiTags;
use super::auth::{Done, done};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

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
    let groups = groups::list_groups(&ctx.domain, auth.caller(), kind).await?;
    Ok(Json(groups.into_iter().map(GroupView::from).collect()))
}

async fn create(
    ctx: &ApiContext,
    auth: &Auth,
    kind: GroupKind,
    body: CreateGroupRequest,
) -> ApiResult<Json<GroupView>> {
    let group = CreateGroup {
        kind,
        name: body.name,
        description: body.description,
        parent_id: body.parent_id,
    }
    .run(&ctx.domain, auth.caller())
    .await?;
    Ok(Json(group.into()))
}

async fn get(
    ctx: &ApiContext,
    auth: &Auth,
    kind: GroupKind,
    id: Uuid,
) -> ApiResult<Json<GroupView>> {
    let group = groups::get_group(&ctx.domain, auth.caller(), kind, id).await?;
    Ok(Json(group.into()))
}

async fn update(
    ctx: &ApiContext,
    auth: &Auth,
    kind: GroupKind,
    id: Uuid,
    body: UpdateGroupRequest,
) -> ApiResult<Json<GroupView>> {
    let group = UpdateGroup {
        kind,
        id,
        name: body.name,
        description: body.description,
        parent_id: body.parent_id,
        clear_parent: body.clear_parent,
    }
    .run(&ctx.domain, auth.caller())
    .await?;
    Ok(Json(group.into()))
}

async fn delete(ctx: &ApiContext, auth: &Auth, kind: GroupKind, id: Uuid) -> ApiResult<Json<Done>> {
    DeleteGroup { kind, id }
        .run(&ctx.domain, auth.caller())
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
                create(&ctx, &auth, $kind, body.0).await
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
                update(&ctx, &auth, $kind, id.0, body.0).await
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

#[cfg(test)]
mod tests {
    use reap3r_actors::groups::{MAX_GROUP_DESCRIPTION_CHARS, MAX_GROUP_NAME_CHARS};
    use serde_json::Value;

    /// The schema's literal bounds are the group operations' constants.
    #[test]
    fn schema_bounds_are_the_domain_limits() {
        let spec: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        for schema in ["CreateGroupRequest", "UpdateGroupRequest"] {
            let props = &spec["components"]["schemas"][schema]["properties"];
            assert_eq!(
                props["name"]["maxLength"], MAX_GROUP_NAME_CHARS as u64,
                "{schema}"
            );
            assert_eq!(
                props["description"]["maxLength"], MAX_GROUP_DESCRIPTION_CHARS as u64,
                "{schema}"
            );
        }
    }
}
