//! Operator accounts in the caller's organisation: create, update, suspend, role changes,
//! sessions, MFA reset, login events and the role catalogue — HTTP mapped to the access
//! operations of `reap3r_actors::access`.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::access::{
    ChangeRole, CreateUser, ResetMfa, RevokeSession, RevokeUserSessions, SetSuspended, UpdateUser,
    user_sessions,
};
use reap3r_store::{AuthSession, LoginEvent, LoginEventFilter, User, Uuid};

use super::auth::{Done, done};
use super::{ApiTags, page_limit};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Role, RoleName};

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct UserView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub role: String,
    /// `active` or `suspended`.
    pub status: String,
    pub mfa_enabled: bool,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            org_id: u.org_id,
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            status: u.status,
            mfa_enabled: u.mfa_enabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A new user in the acting organisation; `role` is never above the caller's own.
#[derive(Debug, Object)]
pub struct CreateUserRequest {
    #[oai(validator(max_length = 320, pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: String,
    /// 12 to 256 characters.
    #[oai(validator(min_length = 12, max_length = 256))]
    pub password: String,
    // No doc comment: on a `$ref` field it becomes an `allOf` (see `RoleName`).
    pub role: RoleName,
    #[oai(validator(max_length = 200))]
    pub display_name: Option<String>,
}

#[derive(Debug, Object)]
pub struct UpdateUserRequest {
    #[oai(validator(max_length = 320, pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: Option<String>,
    #[oai(validator(max_length = 200))]
    pub display_name: Option<String>,
}

#[derive(Debug, Object)]
pub struct SuspendRequest {
    /// True suspends (and ends every session), false reactivates.
    pub suspended: bool,
}

#[derive(Debug, Object)]
pub struct RoleRequest {
    pub role: RoleName,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: i64,
    pub last_used_at: i64,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

impl From<AuthSession> for SessionView {
    fn from(s: AuthSession) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            access_expires_at: s.access_expires_at,
            refresh_expires_at: s.refresh_expires_at,
            source_ip: s.source_ip,
            user_agent: s.user_agent,
            revoked_at: s.revoked_at,
            revoked_reason: s.revoked_reason,
        }
    }
}

#[derive(Debug, Object)]
pub struct RevokedCount {
    pub revoked: u64,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LoginEventView {
    pub id: Uuid,
    pub ts: i64,
    pub user_id: Option<Uuid>,
    pub email: String,
    pub source_ip: String,
    pub success: bool,
    /// success, mfa_required, bad_password, unknown_user, suspended, mfa_failed,
    /// mfa_code_reused, account_locked, ip_locked.
    pub outcome: String,
    pub detail: Option<String>,
}

impl From<LoginEvent> for LoginEventView {
    fn from(e: LoginEvent) -> Self {
        Self {
            id: e.id,
            ts: e.ts,
            user_id: e.user_id,
            email: e.email,
            source_ip: e.source_ip,
            success: e.success,
            outcome: e.outcome,
            detail: e.detail,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RoleView {
    pub name: String,
    pub permissions: Vec<String>,
}

pub struct UsersApi;

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// List the users of the organisation.
    #[oai(path = "/api/users", method = "get", operation_id = "listUsers")]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<UserView>>> {
        let users = ctx.store.list_users(auth.caller().org_id).await?;
        Ok(Json(users.into_iter().map(UserView::from).collect()))
    }

    /// Create a user in the organisation.
    #[oai(path = "/api/users", method = "post", operation_id = "createUser")]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<CreateUserRequest>,
    ) -> ApiResult<Json<UserView>> {
        let user = CreateUser {
            email: body.0.email,
            password: body.0.password,
            role: body.0.role.into(),
            display_name: body.0.display_name,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(user.into()))
    }

    /// Get one user.
    #[oai(path = "/api/users/:id", method = "get", operation_id = "getUser")]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<UserView>> {
        let user = ctx
            .store
            .user_in_org(auth.caller().org_id, id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        Ok(Json(user.into()))
    }

    /// Change a user's email or display name.
    #[oai(path = "/api/users/:id", method = "patch", operation_id = "updateUser")]
    async fn update(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<UpdateUserRequest>,
    ) -> ApiResult<Json<UserView>> {
        let user = UpdateUser {
            user_id: id.0,
            email: body.0.email,
            display_name: body.0.display_name,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(user.into()))
    }

    /// Suspend or reactivate a user. Suspension ends every session at once.
    #[oai(
        path = "/api/admin/users/:id/suspend",
        method = "patch",
        operation_id = "suspendUser"
    )]
    async fn suspend(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<SuspendRequest>,
    ) -> ApiResult<Json<UserView>> {
        let user = SetSuspended {
            user_id: id.0,
            suspended: body.suspended,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(user.into()))
    }

    /// Change a user's role (never to one above the caller's).
    #[oai(
        path = "/api/admin/users/:id/role",
        method = "post",
        operation_id = "setUserRole"
    )]
    async fn set_role(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<RoleRequest>,
    ) -> ApiResult<Json<UserView>> {
        let user = ChangeRole {
            user_id: id.0,
            role: body.role.into(),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(user.into()))
    }

    /// A user's sessions, newest first, revoked ones included.
    #[oai(
        path = "/api/admin/users/:id/sessions",
        method = "get",
        operation_id = "listUserSessions"
    )]
    async fn sessions(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Vec<SessionView>>> {
        let sessions = user_sessions(&ctx.domain, auth.caller(), id.0).await?;
        Ok(Json(sessions.into_iter().map(SessionView::from).collect()))
    }

    /// Revoke one session; its tokens stop working on the next request.
    #[oai(
        path = "/api/admin/sessions/:id",
        method = "delete",
        operation_id = "revokeSession"
    )]
    async fn revoke_session(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        RevokeSession { session_id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }

    /// Revoke every session of a user.
    #[oai(
        path = "/api/admin/users/:id/revoke-all",
        method = "post",
        operation_id = "revokeUserSessions"
    )]
    async fn revoke_all(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<RevokedCount>> {
        let revoked = RevokeUserSessions { user_id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(Json(RevokedCount { revoked }))
    }

    /// Reset a user's MFA (lost phone): they log in with the password alone and set it up again.
    #[oai(
        path = "/api/admin/users/:id/mfa/disable",
        method = "post",
        operation_id = "resetUserMfa"
    )]
    async fn reset_mfa(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        ResetMfa { user_id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }

    /// Login attempts in the organisation, newest first.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/admin/login-events",
        method = "get",
        operation_id = "listLoginEvents"
    )]
    async fn login_events(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// Only this user's attempts.
        user_id: Query<Option<Uuid>>,
        /// Only attempts for this email.
        #[oai(validator(max_length = 320))]
        email: Query<Option<String>>,
        /// Only successes (true) or failures (false).
        success: Query<Option<bool>>,
        /// From this time (unix ms).
        since: Query<Option<i64>>,
        /// Until this time (unix ms).
        until: Query<Option<i64>>,
        /// Page cursor: only events older than this time (unix ms).
        before: Query<Option<i64>>,
        /// 1 to 1000, default 100.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<LoginEventView>>> {
        let filter = LoginEventFilter {
            user_id: user_id.0,
            email: email.0,
            success: success.0,
            since: since.0,
            until: until.0,
            before_ts: before.0,
            limit: page_limit(limit.0, 1000)?,
        };
        let events = ctx
            .store
            .list_login_events(auth.caller().org_id, &filter)
            .await?;
        Ok(Json(events.into_iter().map(LoginEventView::from).collect()))
    }

    /// The built-in roles and their permissions.
    #[oai(path = "/api/admin/roles", method = "get", operation_id = "listRoles")]
    async fn roles(&self, _auth: Auth) -> ApiResult<Json<Vec<RoleView>>> {
        Ok(Json(
            Role::ALL
                .iter()
                .map(|r| RoleView {
                    name: r.as_str().into(),
                    permissions: r.permissions().iter().map(|p| p.as_str().into()).collect(),
                })
                .collect(),
        ))
    }
}
