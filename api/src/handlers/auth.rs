//! `/api/auth/*`: password login with lockout, the TOTP second step, refresh-token rotation with
//! reuse detection, logout, the caller's own account and self-service MFA — HTTP mapped to the
//! access operations of `reap3r_actors::access`.

use poem::web::{Data, RemoteAddr};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::access::{
    DisableMfa, EnableMfa, Login, LoginMfa, LoginOutcome, Logout, Origin, Refresh, SetupMfa,
    StepUp, Tokens,
};
use reap3r_actors::{DomainError, DomainResult};
use reap3r_store::Uuid;

use super::ApiTags;
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::metrics::HttpMetrics;

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

/// A step-up's lapse time.
#[derive(Debug, Object)]
pub struct StepUpView {
    /// Until when (ms since the epoch) this session may reveal secrets.
    pub valid_until: i64,
}

#[derive(Debug, Object)]
pub struct Done {
    pub ok: bool,
}

pub fn done() -> Json<Done> {
    Json(Done { ok: true })
}

/// Where a request comes from: its address and user agent (logins, the vault's access log).
pub(crate) fn origin(remote: &RemoteAddr, req: &poem::Request) -> Origin {
    Origin::new(
        remote.as_socket_addr().map(|a| a.ip().to_string()),
        req.headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok()),
    )
}

fn tokens(t: Tokens) -> LoginResponse {
    LoginResponse {
        mfa_required: false,
        access_token: Some(t.access_token),
        refresh_token: Some(t.refresh_token),
        expires_in: Some(t.expires_in_s),
        token_type: Some("Bearer".into()),
        challenge_token: None,
    }
}

/// Counts a refused login (or refresh) as an auth failure, and a new session as a login.
fn count<T>(ctx: &ApiContext, result: &DomainResult<T>, session: impl Fn(&T) -> bool) {
    match result {
        Ok(out) if session(out) => HttpMetrics::bump(&ctx.metrics.logins),
        Ok(_) => {}
        Err(
            DomainError::Unauthenticated { .. }
            | DomainError::Forbidden { .. }
            | DomainError::TooMany { .. },
        ) => HttpMetrics::bump(&ctx.metrics.auth_failures),
        Err(_) => {}
    }
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
        let login = Login {
            email: body.0.email,
            password: body.0.password,
            origin: origin(remote, req),
        };
        let result = login.run(&ctx.domain, &ctx.settings.access).await;
        count(&ctx, &result, |o| matches!(o, LoginOutcome::Tokens(_)));
        Ok(Json(match result? {
            LoginOutcome::Tokens(t) => tokens(t),
            LoginOutcome::MfaRequired { challenge_token } => LoginResponse {
                mfa_required: true,
                challenge_token: Some(challenge_token),
                ..LoginResponse::default()
            },
        }))
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
        let login = LoginMfa {
            challenge_token: body.0.challenge_token,
            code: body.0.code,
            origin: origin(remote, req),
        };
        let result = login.run(&ctx.domain, &ctx.settings.access).await;
        count(&ctx, &result, |_| true);
        Ok(Json(tokens(result?)))
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
        let refresh = Refresh {
            refresh_token: body.0.refresh_token,
        };
        let result = refresh.run(&ctx.domain, &ctx.settings.access).await;
        count(&ctx, &result, |_| false);
        Ok(Json(tokens(result?)))
    }

    /// Log out: revoke the current session at once.
    #[oai(path = "/api/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Done>> {
        Logout.run(&ctx.domain, auth.caller()).await?;
        Ok(done())
    }

    /// The caller: account, organisation, role and permissions.
    #[oai(path = "/api/auth/me", method = "get", operation_id = "getMe")]
    async fn me(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<MeView>> {
        let caller = auth.caller();
        let user = ctx
            .store
            .user_by_id(caller.account()?)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
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
        let enrolment = SetupMfa
            .run(&ctx.domain, auth.caller(), &ctx.settings.access)
            .await?;
        Ok(Json(MfaSetupView {
            secret: enrolment.secret,
            otpauth_url: enrolment.otpauth_url,
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
        EnableMfa { code: body.0.code }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }

    /// Prove the second factor again: for the next five minutes this session may reveal
    /// secrets (`POST /api/vault/{id}/reveal`). Only for users with MFA enabled.
    #[oai(path = "/api/auth/step-up", method = "post", operation_id = "stepUp")]
    async fn step_up(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<MfaCodeRequest>,
    ) -> ApiResult<Json<StepUpView>> {
        let until = StepUp { code: body.0.code }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(Json(StepUpView { valid_until: until }))
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
        DisableMfa { code: body.0.code }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }
}

#[cfg(test)]
mod tests {
    use reap3r_actors::access::{
        MAX_API_KEY_LIFETIME_S, MAX_API_KEY_NAME_CHARS, MAX_API_KEY_SCOPES,
        MAX_CHALLENGE_TOKEN_CHARS, MAX_CODE_CHARS, MAX_DISPLAY_NAME_CHARS, MAX_EMAIL_CHARS,
        MAX_LOGIN_EMAIL_CHARS, MAX_LOGIN_PASSWORD_BYTES, MAX_PASSWORD_CHARS,
        MAX_REFRESH_TOKEN_CHARS, MIN_API_KEY_LIFETIME_S, MIN_PASSWORD_CHARS,
    };

    /// The access bounds in the spec are literals (poem-openapi validators take no paths); they
    /// must say what the domain's constants say.
    #[test]
    fn spec_bounds_are_the_domain_limits() {
        let spec: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let prop = |schema: &str, field: &str, bound: &str| {
            // Numeric bounds are written as floats (`60.0`), lengths as integers.
            let v = &spec["components"]["schemas"][schema]["properties"][field][bound];
            v.as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .unwrap_or_else(|| panic!("{schema}.{field} has no {bound}"))
        };
        let n = |v: usize| i64::try_from(v).unwrap();
        let cases = [
            (
                "LoginRequest",
                "email",
                "maxLength",
                n(MAX_LOGIN_EMAIL_CHARS),
            ),
            (
                "LoginRequest",
                "password",
                "maxLength",
                n(MAX_LOGIN_PASSWORD_BYTES),
            ),
            (
                "MfaLoginRequest",
                "challenge_token",
                "maxLength",
                n(MAX_CHALLENGE_TOKEN_CHARS),
            ),
            ("MfaLoginRequest", "code", "maxLength", n(MAX_CODE_CHARS)),
            ("MfaCodeRequest", "code", "maxLength", n(MAX_CODE_CHARS)),
            (
                "RefreshRequest",
                "refresh_token",
                "maxLength",
                n(MAX_REFRESH_TOKEN_CHARS),
            ),
            (
                "CreateUserRequest",
                "email",
                "maxLength",
                n(MAX_EMAIL_CHARS),
            ),
            (
                "CreateUserRequest",
                "password",
                "minLength",
                n(MIN_PASSWORD_CHARS),
            ),
            (
                "CreateUserRequest",
                "password",
                "maxLength",
                n(MAX_PASSWORD_CHARS),
            ),
            (
                "CreateUserRequest",
                "display_name",
                "maxLength",
                n(MAX_DISPLAY_NAME_CHARS),
            ),
            (
                "UpdateUserRequest",
                "email",
                "maxLength",
                n(MAX_EMAIL_CHARS),
            ),
            (
                "UpdateUserRequest",
                "display_name",
                "maxLength",
                n(MAX_DISPLAY_NAME_CHARS),
            ),
            (
                "CreateApiKeyRequest",
                "name",
                "maxLength",
                n(MAX_API_KEY_NAME_CHARS),
            ),
            (
                "CreateApiKeyRequest",
                "scopes",
                "maxItems",
                n(MAX_API_KEY_SCOPES),
            ),
            (
                "CreateApiKeyRequest",
                "expires_in_s",
                "minimum",
                MIN_API_KEY_LIFETIME_S,
            ),
            (
                "CreateApiKeyRequest",
                "expires_in_s",
                "maximum",
                MAX_API_KEY_LIFETIME_S,
            ),
        ];
        for (schema, field, bound, want) in cases {
            assert_eq!(prop(schema, field, bound), want, "{schema}.{field} {bound}");
        }
    }
}
