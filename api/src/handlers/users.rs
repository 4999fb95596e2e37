//! Operator accounts in the caller's organisation: create, update, suspend, role changes,
//! sessions, MFA reset, login events and the role catalogue.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_store::{AuthSession, LoginEvent, LoginEventFilter, NewUser, User, UserUpdate, Uuid};
use serde_json::json;

use super::auth::{Done, done, user_target};
use super::{ApiTags, audit, optional_text, page_limit, required_text};
use crate::auth::{Auth, Caller};
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::password::hash_password;
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

/// Nobody hands out, or acts on holders of, a role above their own.
fn check_grant(caller: &Caller, role: Role) -> ApiResult<()> {
    if caller.role.may_grant(role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "a {} cannot manage a {}",
            caller.role, role
        )))
    }
}

async fn target_user(ctx: &ApiContext, caller: &Caller, id: Uuid) -> ApiResult<User> {
    let user = ctx
        .store
        .user_in_org(caller.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if let Ok(role) = user.role.parse::<Role>() {
        check_grant(caller, role)?;
    }
    Ok(user)
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
        let caller = auth.caller();
        let role = Role::from(body.role);
        check_grant(caller, role)?;
        let email = valid_email(&body.email)?;
        let display_name = optional_text("display_name", body.display_name.as_deref(), 200)?;
        let password = body.password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| ApiError::unavailable("password hashing failed"))?
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let now = ctx.now_ms();
        let user = ctx
            .store
            .create_user(
                &NewUser {
                    org_id: caller.org_id,
                    email,
                    password_hash: hash,
                    role: role.as_str().into(),
                },
                now,
            )
            .await?;
        let user = match display_name {
            Some(name) => {
                let update = UserUpdate {
                    display_name: Some(Some(name)),
                    ..UserUpdate::default()
                };
                ctx.store
                    .update_user(caller.org_id, user.id, &update, now)
                    .await?
            }
            None => user,
        };
        audit(
            &ctx,
            caller,
            "user.create",
            Some(user_target(user.id)),
            json!({ "email": user.email, "role": user.role }),
        )
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
        let caller = auth.caller();
        target_user(&ctx, caller, id.0).await?;
        let update = UserUpdate {
            email: body.email.as_deref().map(valid_email).transpose()?,
            display_name: body
                .display_name
                .as_deref()
                .map(|d| optional_text("display_name", Some(d), 200))
                .transpose()?,
            ..UserUpdate::default()
        };
        let user = ctx
            .store
            .update_user(caller.org_id, id.0, &update, ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "user.update",
            Some(user_target(user.id)),
            json!({ "email": user.email, "display_name": user.display_name }),
        )
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
        let caller = auth.caller();
        if caller.user_id == Some(id.0) {
            return Err(ApiError::conflict("you cannot suspend yourself"));
        }
        target_user(&ctx, caller, id.0).await?;
        let now = ctx.now_ms();
        let status = if body.suspended {
            "suspended"
        } else {
            "active"
        };
        let update = UserUpdate {
            status: Some(status.into()),
            ..UserUpdate::default()
        };
        let user = ctx
            .store
            .update_user(caller.org_id, id.0, &update, now)
            .await?;
        if body.suspended {
            ctx.store
                .revoke_user_sessions(id.0, "suspended", now)
                .await?;
        }
        let action = if body.suspended {
            "user.suspend"
        } else {
            "user.reactivate"
        };
        audit(&ctx, caller, action, Some(user_target(id.0)), json!({})).await?;
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
        let caller = auth.caller();
        if caller.user_id == Some(id.0) {
            return Err(ApiError::conflict("you cannot change your own role"));
        }
        let role = Role::from(body.role);
        check_grant(caller, role)?;
        let before = target_user(&ctx, caller, id.0).await?;
        let update = UserUpdate {
            role: Some(role.as_str().into()),
            ..UserUpdate::default()
        };
        let user = ctx
            .store
            .update_user(caller.org_id, id.0, &update, ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "user.role_change",
            Some(user_target(id.0)),
            json!({ "from": before.role, "to": user.role }),
        )
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
        ctx.store
            .user_in_org(auth.caller().org_id, id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        let sessions = ctx.store.list_user_sessions(id.0).await?;
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
        let caller = auth.caller();
        let session = ctx
            .store
            .auth_session(id.0)
            .await?
            .filter(|s| s.org_id == caller.org_id)
            .ok_or_else(|| ApiError::not_found("session"))?;
        target_user(&ctx, caller, session.user_id).await?;
        ctx.store
            .revoke_auth_session(id.0, "revoked_by_admin", ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "session.revoke",
            Some(format!("session:{}", id.0)),
            json!({ "user_id": session.user_id }),
        )
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
        let caller = auth.caller();
        target_user(&ctx, caller, id.0).await?;
        let revoked = ctx
            .store
            .revoke_user_sessions(id.0, "revoked_by_admin", ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "session.revoke_all",
            Some(user_target(id.0)),
            json!({ "revoked": revoked }),
        )
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
        let caller = auth.caller();
        target_user(&ctx, caller, id.0).await?;
        ctx.store
            .set_user_mfa(id.0, None, false, ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "user.mfa_reset",
            Some(user_target(id.0)),
            json!({}),
        )
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

/// A plausible email: trimmed, one `@` with text either side, no spaces, at most 320 chars.
pub fn valid_email(email: &str) -> ApiResult<String> {
    let email = required_text("email", email, 320)?.to_lowercase();
    let ok = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(email)
    } else {
        Err(ApiError::invalid("email is not a valid address"))
    }
}
