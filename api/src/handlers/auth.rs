//! `/api/auth/*`: password login with lockout, the TOTP second step, refresh-token rotation with
//! reuse detection, logout, the caller's own account and self-service MFA.

use std::sync::OnceLock;

use poem::web::{Data, RemoteAddr};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_store::{ChallengeCheck, NewAuthSession, NewLoginEvent, RefreshOutcome, User, Uuid};
use serde_json::json;

use super::{ApiTags, audit, audit_as};
use crate::auth::{
    ACCESS_PREFIX, Auth, CHALLENGE_PREFIX, Caller, REFRESH_PREFIX, hash_secret, new_secret,
};
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::metrics::HttpMetrics;
use crate::password::{hash_password, verify_password};
use crate::totp;

#[derive(Debug, Object)]
pub struct LoginRequest {
    #[oai(validator(max_length = 320))]
    pub email: String,
    #[oai(validator(max_length = 1024))]
    pub password: String,
}

/// Either tokens, or (for accounts with MFA) `mfa_required` and a challenge to finish at
/// `/api/auth/login/mfa`.
#[derive(Debug, Default, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LoginResponse {
    /// True when a TOTP code is needed; the tokens are then absent.
    pub mfa_required: bool,
    #[oai(skip_serializing_if_is_none)]
    pub challenge_token: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub access_token: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires.
    #[oai(skip_serializing_if_is_none)]
    pub expires_in: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
}

#[derive(Debug, Object)]
pub struct MfaLoginRequest {
    #[oai(validator(max_length = 256))]
    pub challenge_token: String,
    /// The 6-digit code from the authenticator app.
    #[oai(validator(max_length = 16))]
    pub code: String,
}

#[derive(Debug, Object)]
pub struct RefreshRequest {
    #[oai(validator(max_length = 256))]
    pub refresh_token: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MeView {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    /// The user's own organisation.
    pub home_org_id: Uuid,
    /// The organisation this request acted in.
    pub org_id: Uuid,
    pub role: String,
    pub permissions: Vec<String>,
    pub mfa_enabled: bool,
    /// `session` or `api_key`.
    pub credential: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MfaSetupView {
    /// Base32 secret, for manual entry.
    pub secret: String,
    /// `otpauth://` URL for QR codes.
    pub otpauth_url: String,
}

#[derive(Debug, Object)]
pub struct MfaCodeRequest {
    #[oai(validator(max_length = 16))]
    pub code: String,
}

#[derive(Debug, Object)]
pub struct Done {
    pub ok: bool,
}

pub fn done() -> Json<Done> {
    Json(Done { ok: true })
}

fn source_ip(remote: &RemoteAddr) -> String {
    remote
        .as_socket_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

/// Argon2 is deliberately slow, so it runs off the async workers.
async fn verify_off_thread(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// A valid hash of nothing anyone knows, verified against for unknown emails so the answer takes
/// as long as for a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy-password-never-matches").unwrap_or_default())
}

struct Attempt<'a> {
    ctx: &'a ApiContext,
    email: String,
    ip: String,
}

impl Attempt<'_> {
    async fn record(
        &self,
        user: Option<&User>,
        success: bool,
        outcome: &str,
        detail: Option<String>,
    ) -> ApiResult<()> {
        if !success {
            HttpMetrics::bump(&self.ctx.metrics.auth_failures);
        }
        self.ctx
            .store
            .record_login_event(
                &NewLoginEvent {
                    org_id: user.map(|u| u.org_id),
                    user_id: user.map(|u| u.id),
                    email: self.email.clone(),
                    source_ip: self.ip.clone(),
                    success,
                    outcome: outcome.to_owned(),
                    detail,
                },
                self.ctx.now_ms(),
            )
            .await?;
        Ok(())
    }

    /// Refuses an address or an account that failed too often within the window.
    async fn check_lockout(&self, user: Option<&User>) -> ApiResult<()> {
        let s = &self.ctx.settings;
        let since = self.ctx.now_ms() - s.lockout_window_ms;
        let by_ip = self
            .ctx
            .store
            .count_login_failures_for_ip(&self.ip, since)
            .await?;
        if by_ip >= s.lockout_ip_failures {
            self.record(user, false, "ip_locked", None).await?;
            return Err(ApiError::too_many(
                "too_many_attempts",
                "too many failed logins from this address; try again later",
            ));
        }
        let by_email = self
            .ctx
            .store
            .count_login_failures_for_email(&self.email, since)
            .await?;
        if by_email >= s.lockout_account_failures {
            self.record(user, false, "account_locked", None).await?;
            return Err(ApiError::too_many(
                "account_locked",
                "too many failed logins for this account; try again later",
            ));
        }
        Ok(())
    }
}

/// A new session row and its first token pair.
async fn open_session(
    ctx: &ApiContext,
    user: &User,
    ip: &str,
    user_agent: Option<String>,
) -> ApiResult<LoginResponse> {
    let access = new_secret(ACCESS_PREFIX)?;
    let refresh = new_secret(REFRESH_PREFIX)?;
    let now = ctx.now_ms();
    let s = &ctx.settings;
    let session = ctx
        .store
        .create_auth_session(
            &NewAuthSession {
                user_id: user.id,
                org_id: user.org_id,
                access_hash: hash_secret(&access),
                access_expires_at: now + s.access_ttl_ms,
                refresh_hash: hash_secret(&refresh),
                refresh_expires_at: now + s.refresh_ttl_ms,
                source_ip: Some(ip.to_owned()),
                user_agent,
            },
            now,
        )
        .await?;
    HttpMetrics::bump(&ctx.metrics.logins);
    audit_as(
        ctx,
        Some(user.org_id),
        &format!("user:{}", user.email),
        "auth.login",
        Some(format!("session:{}", session.id)),
        json!({ "source_ip": ip }),
    )
    .await?;
    Ok(tokens(ctx, access, refresh))
}

fn tokens(ctx: &ApiContext, access: String, refresh: String) -> LoginResponse {
    LoginResponse {
        mfa_required: false,
        access_token: Some(access),
        refresh_token: Some(refresh),
        expires_in: Some(ctx.settings.access_ttl_ms / 1000),
        token_type: Some("Bearer".into()),
        challenge_token: None,
    }
}

fn user_agent(req: &poem::Request) -> Option<String> {
    req.headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "wrong email or password")
}

pub struct AuthApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Log in with email and password.
    ///
    /// Answers tokens, or `mfa_required` with a challenge when the account has MFA. Repeated
    /// failures lock the account and the source address out for a while (429).
    #[oai(path = "/api/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        ctx: Data<&ApiContext>,
        remote: &RemoteAddr,
        req: &poem::Request,
        body: Json<LoginRequest>,
    ) -> ApiResult<Json<LoginResponse>> {
        let attempt = Attempt {
            ctx: &ctx,
            email: body.email.trim().to_lowercase(),
            ip: source_ip(remote),
        };
        let user = ctx.store.user_by_email(&attempt.email).await?;
        attempt.check_lockout(user.as_ref()).await?;
        let phc = user
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |u| u.password_hash.clone());
        let password_ok = verify_off_thread(body.password.clone(), phc).await;
        let user = match user {
            Some(user) if password_ok => user,
            Some(user) => {
                attempt
                    .record(Some(&user), false, "bad_password", None)
                    .await?;
                return Err(invalid_credentials());
            }
            None => {
                attempt.record(None, false, "unknown_user", None).await?;
                return Err(invalid_credentials());
            }
        };
        if user.status != "active" {
            attempt
                .record(Some(&user), false, "suspended", None)
                .await?;
            return Err(ApiError::forbidden("the account is suspended"));
        }
        if user.mfa_enabled {
            let challenge = new_secret(CHALLENGE_PREFIX)?;
            let now = ctx.now_ms();
            ctx.store
                .create_mfa_challenge(
                    &hash_secret(&challenge),
                    user.id,
                    &attempt.ip,
                    now + ctx.settings.mfa_challenge_ttl_ms,
                    now,
                )
                .await?;
            attempt
                .record(Some(&user), true, "mfa_required", None)
                .await?;
            return Ok(Json(LoginResponse {
                mfa_required: true,
                challenge_token: Some(challenge),
                ..LoginResponse::default()
            }));
        }
        attempt.record(Some(&user), true, "success", None).await?;
        Ok(Json(
            open_session(&ctx, &user, &attempt.ip, user_agent(req)).await?,
        ))
    }

    /// Finish an MFA login with the challenge and a TOTP code.
    ///
    /// Each challenge allows a few attempts and each code works once.
    #[oai(
        path = "/api/auth/login/mfa",
        method = "post",
        operation_id = "loginMfa"
    )]
    async fn login_mfa(
        &self,
        ctx: Data<&ApiContext>,
        remote: &RemoteAddr,
        req: &poem::Request,
        body: Json<MfaLoginRequest>,
    ) -> ApiResult<Json<LoginResponse>> {
        let now = ctx.now_ms();
        let hash = hash_secret(body.challenge_token.trim());
        let user_id = match ctx
            .store
            .mfa_challenge_attempt(&hash, ctx.settings.mfa_max_attempts, now)
            .await?
        {
            ChallengeCheck::Open { user_id, .. } => user_id,
            ChallengeCheck::TooManyAttempts => {
                return Err(ApiError::too_many(
                    "too_many_attempts",
                    "too many codes tried for this challenge; log in again",
                ));
            }
            _ => {
                HttpMetrics::bump(&ctx.metrics.auth_failures);
                return Err(ApiError::unauthorized(
                    "invalid_challenge",
                    "the MFA challenge is unknown, used or expired; log in again",
                ));
            }
        };
        let user = ctx
            .store
            .user_by_id(user_id)
            .await?
            .ok_or_else(invalid_credentials)?;
        let attempt = Attempt {
            ctx: &ctx,
            email: user.email.clone(),
            ip: source_ip(remote),
        };
        attempt.check_lockout(Some(&user)).await?;
        let secret = user
            .mfa_secret
            .clone()
            .filter(|_| user.mfa_enabled)
            .ok_or_else(|| ApiError::unauthorized("invalid_challenge", "MFA is not enabled"))?;
        let Some(step) = totp::matching_step(&secret, &body.code, now)? else {
            attempt
                .record(Some(&user), false, "mfa_failed", None)
                .await?;
            return Err(ApiError::unauthorized("invalid_code", "wrong MFA code"));
        };
        if !ctx.store.accept_totp_step(user.id, step).await? {
            attempt
                .record(Some(&user), false, "mfa_code_reused", None)
                .await?;
            return Err(ApiError::unauthorized(
                "code_already_used",
                "this MFA code was already used; wait for the next one",
            ));
        }
        if !ctx.store.consume_mfa_challenge(&hash, now).await? {
            return Err(ApiError::unauthorized(
                "invalid_challenge",
                "the MFA challenge was already used",
            ));
        }
        if user.status != "active" {
            return Err(ApiError::forbidden("the account is suspended"));
        }
        attempt
            .record(Some(&user), true, "success", Some("mfa".into()))
            .await?;
        Ok(Json(
            open_session(&ctx, &user, &attempt.ip, user_agent(req)).await?,
        ))
    }

    /// Exchange a refresh token for a new token pair.
    ///
    /// The old refresh token stops working. Presenting a refresh token a second time is taken
    /// as theft: the whole session is revoked.
    #[oai(
        path = "/api/auth/refresh",
        method = "post",
        operation_id = "refreshToken"
    )]
    async fn refresh(
        &self,
        ctx: Data<&ApiContext>,
        body: Json<RefreshRequest>,
    ) -> ApiResult<Json<LoginResponse>> {
        let access = new_secret(ACCESS_PREFIX)?;
        let refresh = new_secret(REFRESH_PREFIX)?;
        let now = ctx.now_ms();
        let s = &ctx.settings;
        let outcome = ctx
            .store
            .rotate_refresh_token(
                &hash_secret(body.refresh_token.trim()),
                &hash_secret(&access),
                now + s.access_ttl_ms,
                &hash_secret(&refresh),
                now + s.refresh_ttl_ms,
                now,
            )
            .await?;
        if !matches!(outcome, RefreshOutcome::Rotated(_)) {
            HttpMetrics::bump(&ctx.metrics.auth_failures);
        }
        match outcome {
            RefreshOutcome::Rotated(_) => Ok(Json(tokens(&ctx, access, refresh))),
            RefreshOutcome::Reused {
                session_id,
                user_id,
            } => {
                let org = ctx.store.user_by_id(user_id).await?.map(|u| u.org_id);
                audit_as(
                    &ctx,
                    org,
                    "system",
                    "auth.refresh_reuse",
                    Some(format!("session:{session_id}")),
                    json!({ "user_id": user_id, "revoked": true }),
                )
                .await?;
                Err(ApiError::unauthorized(
                    "refresh_token_reused",
                    "this refresh token was already used; the session has been revoked",
                ))
            }
            RefreshOutcome::Expired => Err(ApiError::unauthorized(
                "refresh_token_expired",
                "the refresh token has expired; log in again",
            )),
            RefreshOutcome::Unknown | RefreshOutcome::Revoked => Err(ApiError::unauthorized(
                "invalid_refresh_token",
                "unknown or revoked refresh token",
            )),
        }
    }

    /// Log out: revoke the current session at once.
    #[oai(path = "/api/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Done>> {
        let caller = auth.caller();
        let Some(session_id) = caller.session_id() else {
            return Err(ApiError::bad_request(
                "not_a_session",
                "API keys have no session; delete the key instead",
            ));
        };
        ctx.store
            .revoke_auth_session(session_id, "logout", ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "auth.logout",
            Some(format!("session:{session_id}")),
            json!({}),
        )
        .await?;
        Ok(done())
    }

    /// The caller: account, organisation, role and permissions.
    #[oai(path = "/api/auth/me", method = "get", operation_id = "getMe")]
    async fn me(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<MeView>> {
        let caller = auth.caller();
        let user = own_user(&ctx, caller).await?;
        let permissions = crate::rbac::Permission::ALL
            .iter()
            .filter(|p| caller.allows(**p))
            .map(|p| p.as_str().to_owned())
            .collect();
        Ok(Json(MeView {
            user_id: user.id,
            email: user.email,
            display_name: user.display_name,
            home_org_id: caller.home_org,
            org_id: caller.org_id,
            role: caller.role.as_str().into(),
            permissions,
            mfa_enabled: user.mfa_enabled,
            credential: match caller.session_id() {
                Some(_) => "session".into(),
                None => "api_key".into(),
            },
        }))
    }

    /// Start MFA setup: a new secret to put in an authenticator app.
    ///
    /// MFA is not active until `/api/auth/mfa/enable` receives a valid code.
    #[oai(
        path = "/api/auth/mfa/setup",
        method = "post",
        operation_id = "setupMfa"
    )]
    async fn mfa_setup(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<MfaSetupView>> {
        let caller = session_only(auth.caller())?;
        let user = own_user(&ctx, caller).await?;
        if user.mfa_enabled {
            return Err(ApiError::conflict(
                "MFA is already enabled; disable it first",
            ));
        }
        let secret = totp::new_secret()?;
        let url = totp::otpauth_url(&secret, &user.email, &ctx.settings.totp_issuer)?;
        ctx.store
            .set_user_mfa(user.id, Some(&secret), false, ctx.now_ms())
            .await?;
        audit(
            &ctx,
            caller,
            "user.mfa_setup",
            Some(user_target(user.id)),
            json!({}),
        )
        .await?;
        Ok(Json(MfaSetupView {
            secret,
            otpauth_url: url,
        }))
    }

    /// Turn MFA on by proving the authenticator app has the secret.
    #[oai(
        path = "/api/auth/mfa/enable",
        method = "post",
        operation_id = "enableMfa"
    )]
    async fn mfa_enable(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<MfaCodeRequest>,
    ) -> ApiResult<Json<Done>> {
        let caller = session_only(auth.caller())?;
        let user = own_user(&ctx, caller).await?;
        if user.mfa_enabled {
            return Err(ApiError::conflict("MFA is already enabled"));
        }
        let secret = user
            .mfa_secret
            .clone()
            .ok_or_else(|| ApiError::conflict("call /api/auth/mfa/setup first"))?;
        let now = ctx.now_ms();
        spend_code(&ctx, &user, &secret, &body.code, now).await?;
        ctx.store
            .set_user_mfa(user.id, Some(&secret), true, now)
            .await?;
        audit(
            &ctx,
            caller,
            "user.mfa_enable",
            Some(user_target(user.id)),
            json!({}),
        )
        .await?;
        Ok(done())
    }

    /// Turn MFA off; needs a current code.
    #[oai(
        path = "/api/auth/mfa/disable",
        method = "post",
        operation_id = "disableMfa"
    )]
    async fn mfa_disable(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<MfaCodeRequest>,
    ) -> ApiResult<Json<Done>> {
        let caller = session_only(auth.caller())?;
        let user = own_user(&ctx, caller).await?;
        let secret = user
            .mfa_secret
            .clone()
            .filter(|_| user.mfa_enabled)
            .ok_or_else(|| ApiError::conflict("MFA is not enabled"))?;
        let now = ctx.now_ms();
        spend_code(&ctx, &user, &secret, &body.code, now).await?;
        ctx.store.set_user_mfa(user.id, None, false, now).await?;
        audit(
            &ctx,
            caller,
            "user.mfa_disable",
            Some(user_target(user.id)),
            json!({}),
        )
        .await?;
        Ok(done())
    }
}

/// Checks a code from a signed-in user's app and uses up its time step, so it works once.
async fn spend_code(
    ctx: &ApiContext,
    user: &User,
    secret: &str,
    code: &str,
    now: i64,
) -> ApiResult<()> {
    let step = totp::matching_step(secret, code, now)?
        .ok_or_else(|| ApiError::bad_request("invalid_code", "wrong MFA code"))?;
    if !ctx.store.accept_totp_step(user.id, step).await? {
        return Err(ApiError::bad_request(
            "code_already_used",
            "this code was already used",
        ));
    }
    Ok(())
}

pub fn user_target(id: Uuid) -> String {
    format!("user:{id}")
}

async fn own_user(ctx: &ApiContext, caller: &Caller) -> ApiResult<User> {
    ctx.store
        .user_by_id(caller.account()?)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// MFA changes need a person at a session, not an integration's key.
fn session_only(caller: &Caller) -> ApiResult<&Caller> {
    if caller.session_id().is_none() {
        return Err(ApiError::forbidden(
            "MFA can only be changed from a login session",
        ));
    }
    Ok(caller)
}
