//! Enrolment tokens: create (the secret is shown once), list, revoke, delete, and the command
//! that enrols an agent with this server's pinned identity.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::enrolment::{
    self, CreateEnrolmentToken, DeleteEnrolmentToken, ListEnrolmentTokens, RevokeEnrolmentToken,
};
use reap3r_store::{EnrolmentToken, Uuid};

use super::ApiTags;
use super::auth::{Done, done};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

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

impl From<EnrolmentToken> for TokenView {
    fn from(t: EnrolmentToken) -> Self {
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

impl From<enrolment::EnrolCommands> for EnrolCommands {
    fn from(c: enrolment::EnrolCommands) -> Self {
        Self {
            server: c.server,
            fingerprint: c.fingerprint,
            server_key: c.server_key,
            unix: c.unix,
            windows: c.windows,
        }
    }
}

pub struct TokensApi;

#[OpenApi(tag = "ApiTags::Enrolment")]
impl TokensApi {
    /// List enrolment tokens (never their secrets).
    #[oai(
        path = "/api/enrollment/tokens",
        method = "get",
        operation_id = "listEnrollmentTokens"
    )]
    async fn list(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<Vec<TokenView>>> {
        let tokens = ListEnrolmentTokens::default()
            .run(&ctx.domain, auth.caller())
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
        let created = CreateEnrolmentToken {
            label: body.0.label,
            lifetime_s: body.0.expires_in_s,
            max_uses: body.0.max_uses,
            require_approval: body.0.require_approval,
        }
        .run(&ctx.domain, auth.caller(), &ctx.enrolment)
        .await?;
        Ok(Json(CreatedTokenView {
            token: created.token.into(),
            secret: created.secret,
            commands: created.commands.into(),
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
        let token = RevokeEnrolmentToken { id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
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
        DeleteEnrolmentToken { id: id.0 }
            .run(&ctx.domain, auth.caller())
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
        let commands =
            enrolment::enrolment_commands(&ctx.domain, auth.caller(), id.0, &ctx.enrolment).await?;
        Ok(Json(commands.into()))
    }
}

#[cfg(test)]
mod tests {
    use reap3r_actors::enrolment::{
        MAX_TOKEN_LABEL_CHARS, MAX_TOKEN_LIFETIME_S, MAX_TOKEN_USES, MIN_TOKEN_LIFETIME_S,
    };
    use serde_json::Value;

    /// The schema's literal bounds are the enrolment operation's constants.
    #[test]
    fn schema_bounds_are_the_domain_limits() {
        let spec: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let props = &spec["components"]["schemas"]["CreateTokenRequest"]["properties"];
        assert_eq!(props["label"]["maxLength"], MAX_TOKEN_LABEL_CHARS as u64);
        assert_eq!(
            props["expires_in_s"]["minimum"],
            MIN_TOKEN_LIFETIME_S as f64
        );
        assert_eq!(
            props["expires_in_s"]["maximum"],
            MAX_TOKEN_LIFETIME_S as f64
        );
        assert_eq!(props["max_uses"]["maximum"], MAX_TOKEN_USES as f64);
    }
}
