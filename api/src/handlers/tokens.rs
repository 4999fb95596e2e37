//! Enrolment tokens: create (the secret is shown once), list, revoke, delete, and the command
//! that enrols an agent with this server's pinned identity.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::hash_enrollment_token;
use reap3r_store::{EnrollmentToken, NewEnrollmentToken, Uuid};
use serde_json::json;

use super::auth::{Done, done};
use super::{ApiTags, audit, optional_text};
use crate::auth::{Auth, Caller, new_secret};
use crate::context::{ApiContext, EnrolmentInfo};
use crate::error::{ApiError, ApiResult};

/// Longest token lifetime: one year.
const MAX_LIFETIME_S: i64 = 365 * 24 * 3600;
/// Default lifetime: one day.
const DEFAULT_LIFETIME_S: i64 = 24 * 3600;
/// Placeholder for the secret in commands shown after creation (the secret is not stored).
const TOKEN_PLACEHOLDER: &str = "$REAP3R_ENROLL_TOKEN";

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TokenView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub label: Option<String>,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub revoked: bool,
    /// Agents enrolled with it wait for approval.
    pub require_approval: bool,
    pub created_by: Option<String>,
    pub created_at: i64,
}

impl From<EnrollmentToken> for TokenView {
    fn from(t: EnrollmentToken) -> Self {
        Self {
            id: t.id,
            org_id: t.org_id,
            label: t.label,
            expires_at: t.expires_at,
            max_uses: t.max_uses,
            uses: t.uses,
            revoked: t.revoked,
            require_approval: t.require_approval,
            created_by: t.created_by,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct CreateTokenRequest {
    #[oai(validator(max_length = 200))]
    pub label: Option<String>,
    /// Lifetime in seconds, 60 to one year; default one day.
    #[oai(validator(minimum(value = "60"), maximum(value = "31536000")))]
    pub expires_in_s: Option<i64>,
    /// How many agents may enrol with it; unlimited when absent.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub max_uses: Option<i64>,
    /// Agents enrolled with it wait for an operator's approval.
    #[oai(default)]
    pub require_approval: bool,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EnrolCommands {
    /// `host:port` agents dial.
    pub server: String,
    /// SHA-256 of the server certificate the agent pins.
    pub fingerprint: String,
    /// Ed25519 server key the agent pins.
    pub server_key: String,
    /// Linux/macOS shell command.
    pub unix: String,
    /// Windows PowerShell command.
    pub windows: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreatedTokenView {
    pub token: TokenView,
    /// The secret. Shown only now; only its hash is kept.
    pub secret: String,
    pub commands: EnrolCommands,
}

fn commands(info: &EnrolmentInfo, secret: &str) -> EnrolCommands {
    let args = format!(
        "enroll --server {} --token {secret} --fingerprint {} --server-key {}",
        info.server_addr, info.cert_fingerprint, info.server_key
    );
    EnrolCommands {
        server: info.server_addr.clone(),
        fingerprint: info.cert_fingerprint.clone(),
        server_key: info.server_key.clone(),
        unix: format!("reap3r-agent {args} --data-dir /var/lib/reap3r-agent"),
        windows: format!(
            "& 'C:\\Program Files\\Reap3r\\reap3r-agent.exe' {args} --data-dir 'C:\\ProgramData\\Reap3r'"
        ),
    }
}

async fn token_in_org(ctx: &ApiContext, caller: &Caller, id: Uuid) -> ApiResult<EnrollmentToken> {
    ctx.store
        .enrollment_token(caller.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("enrolment token"))
}

fn token_target(id: Uuid) -> String {
    format!("enrollment_token:{id}")
}

pub struct TokensApi;

#[OpenApi(tag = "ApiTags::Enrollment")]
impl TokensApi {
    /// List enrolment tokens (never their secrets).
    #[oai(
        path = "/api/enrollment/tokens",
        method = "get",
        operation_id = "listEnrollmentTokens"
    )]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<TokenView>>> {
        let tokens = ctx
            .store
            .list_enrollment_tokens(Some(auth.caller().org_id))
            .await?;
        Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
    }

    /// Create an enrolment token; the answer holds the secret and ready-to-run commands.
    #[oai(
        path = "/api/enrollment/tokens",
        method = "post",
        operation_id = "createEnrollmentToken"
    )]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<CreateTokenRequest>,
    ) -> ApiResult<Json<CreatedTokenView>> {
        let caller = auth.caller();
        let lifetime = body.expires_in_s.unwrap_or(DEFAULT_LIFETIME_S);
        if !(60..=MAX_LIFETIME_S).contains(&lifetime) {
            return Err(ApiError::invalid(format!(
                "expires_in_s must be between 60 and {MAX_LIFETIME_S}"
            )));
        }
        if body.max_uses.is_some_and(|m| !(1..=1_000_000).contains(&m)) {
            return Err(ApiError::invalid("max_uses must be between 1 and 1000000"));
        }
        let secret = new_secret("r3t_")?;
        let now = ctx.now_ms();
        let token = ctx
            .store
            .create_enrollment_token(
                &NewEnrollmentToken {
                    org_id: caller.org_id,
                    token_hash: hash_enrollment_token(&secret),
                    label: optional_text("label", body.label.as_deref(), 200)?,
                    expires_at: Some(now + lifetime * 1000),
                    max_uses: body.max_uses,
                    require_approval: body.require_approval,
                    created_by: Some(caller.actor()),
                },
                now,
            )
            .await?;
        audit(
            &ctx,
            caller,
            "enrollment_token.create",
            Some(token_target(token.id)),
            json!({
                "max_uses": token.max_uses,
                "expires_at": token.expires_at,
                "require_approval": token.require_approval,
            }),
        )
        .await?;
        Ok(Json(CreatedTokenView {
            commands: commands(&ctx.enrolment, &secret),
            secret,
            token: token.into(),
        }))
    }

    /// Revoke a token: no more agents enrol with it; enrolled ones are unaffected.
    #[oai(
        path = "/api/enrollment/tokens/:id/revoke",
        method = "post",
        operation_id = "revokeEnrollmentToken"
    )]
    async fn revoke(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<TokenView>> {
        let caller = auth.caller();
        let mut token = token_in_org(&ctx, caller, id.0).await?;
        ctx.store.revoke_enrollment_token(id.0).await?;
        audit(
            &ctx,
            caller,
            "enrollment_token.revoke",
            Some(token_target(id.0)),
            json!({}),
        )
        .await?;
        token.revoked = true;
        Ok(Json(token.into()))
    }

    /// Delete a token; agents enrolled with it stay enrolled.
    #[oai(
        path = "/api/enrollment/tokens/:id",
        method = "delete",
        operation_id = "deleteEnrollmentToken"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        let caller = auth.caller();
        token_in_org(&ctx, caller, id.0).await?;
        ctx.store
            .delete_enrollment_token(caller.org_id, id.0)
            .await?;
        audit(
            &ctx,
            caller,
            "enrollment_token.delete",
            Some(token_target(id.0)),
            json!({}),
        )
        .await?;
        Ok(done())
    }

    /// The enrol commands for a token, with a placeholder where the secret goes (it is shown
    /// only at creation).
    #[oai(
        path = "/api/enrollment/tokens/:id/commands",
        method = "get",
        operation_id = "getEnrollmentCommands"
    )]
    async fn commands(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<EnrolCommands>> {
        token_in_org(&ctx, auth.caller(), id.0).await?;
        Ok(Json(commands(&ctx.enrolment, TOKEN_PLACEHOLDER)))
    }
}
