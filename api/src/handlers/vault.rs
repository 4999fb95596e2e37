//! The vault: secrets with versions, sharing, rotation, the MFA-gated reveal and the access
//! log. Lists and reads never carry a value; only the two reveal operations do. The bodies are
//! in `vault_views.rs`.

use poem::web::{Data, RemoteAddr};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use reap3r_actors::access::Origin;
use reap3r_actors::vault::{
    self, CreateSecret, DeleteSecret, GetSecret, ListGrants, ListSecrets, ListVersions,
    ReadAccessLog, RevealSecret, RotateSecret, RotationPolicy, SecretKind, SecretValue,
    ShareSecret, UnshareSecret, UpdateSecret, UseSecret,
};
use reap3r_store::{GrantFlags, Uuid};

use super::ApiTags;
use super::auth::{Done, done, origin};
use super::jobs::{JobView, engine};
use super::vault_views::{
    AccessLogEntryView, ClearableField, CreateSecretRequest, GrantView, RevealRequest,
    RevealedView, RotateRequest, SecretKindView, SecretView, ShareRequest, UpdateSecretRequest,
    UseSecretRequest, VaultStatsView, VersionView, subject,
};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

pub struct VaultApi;

#[OpenApi(tag = "ApiTags::Vault")]
impl VaultApi {
    /// List the secrets shared with the caller (never their values), by name.
    #[oai(path = "/api/vault", method = "get", operation_id = "listSecrets")]
    #[expect(clippy::too_many_arguments, reason = "one parameter per query filter")]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        kind: Query<Option<SecretKindView>>,
        folder_id: Query<Option<Uuid>>,
        tag: Query<Option<String>>,
        q: Query<Option<String>>,
        after: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<SecretView>>> {
        let views = ListSecrets {
            kind: kind.0.map(SecretKind::from),
            folder_id: folder_id.0,
            tag: tag.0,
            text: q.0,
            after_name: after.0,
            limit: limit.0,
            origin: origin(remote, req),
            ..ListSecrets::default()
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(views.into_iter().map(SecretView::from).collect()))
    }

    /// Create a secret; its value is version 1. The caller owns it.
    #[oai(path = "/api/vault", method = "post", operation_id = "createSecret")]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        body: Json<CreateSecretRequest>,
    ) -> ApiResult<Json<SecretView>> {
        let b = body.0;
        let view = CreateSecret {
            name: b.name,
            kind: b.kind.into(),
            value: SecretValue::new(b.value),
            folder_id: b.folder_id,
            tags: b.tags,
            notes: b.notes,
            expires_at: b.expires_at,
            rotation: b.rotation.map(RotationPolicy::from),
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(view.into()))
    }

    /// Counts for the dashboard: total, expiring soon, expired, weak passwords, rotations due.
    #[oai(path = "/api/vault/stats", method = "get", operation_id = "vaultStats")]
    async fn stats(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<VaultStatsView>> {
        let c = vault::vault_counts(&ctx.domain, auth.caller()).await?;
        Ok(Json(VaultStatsView {
            total: c.total,
            expiring_soon: c.expiring_soon,
            expired: c.expired,
            weak: c.weak,
            rotation_due: c.rotation_due,
        }))
    }

    /// Secrets expiring within `within_days` (default 30), soonest first.
    #[oai(
        path = "/api/vault/expiring",
        method = "get",
        operation_id = "listExpiringSecrets"
    )]
    async fn expiring(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        #[oai(validator(minimum(value = "0"), maximum(value = "3650")))] within_days: Query<
            Option<i64>,
        >,
    ) -> ApiResult<Json<Vec<SecretView>>> {
        let views = ListSecrets {
            expiring_within_days: Some(within_days.0.unwrap_or(vault::DEFAULT_EXPIRING_DAYS)),
            limit: Some(reap3r_store::MAX_SECRET_PAGE),
            origin: origin(remote, req),
            ..ListSecrets::default()
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(views.into_iter().map(SecretView::from).collect()))
    }

    /// One secret's metadata.
    #[oai(path = "/api/vault/:id", method = "get", operation_id = "getSecret")]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
    ) -> ApiResult<Json<SecretView>> {
        let view = GetSecret {
            id: id.0,
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(view.into()))
    }

    /// Change a secret's metadata; a `value` makes a new version.
    #[oai(
        path = "/api/vault/:id",
        method = "patch",
        operation_id = "updateSecret"
    )]
    async fn update(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
        body: Json<UpdateSecretRequest>,
    ) -> ApiResult<Json<SecretView>> {
        let b = body.0;
        let clears = |f: ClearableField| b.clear.contains(&f);
        let view = UpdateSecret {
            id: id.0,
            name: b.name,
            folder_id: if clears(ClearableField::FolderId) {
                Some(None)
            } else {
                b.folder_id.map(Some)
            },
            tags: b.tags,
            notes: if clears(ClearableField::Notes) {
                Some(String::new())
            } else {
                b.notes
            },
            expires_at: if clears(ClearableField::ExpiresAt) {
                Some(None)
            } else {
                b.expires_at.map(Some)
            },
            rotation: if clears(ClearableField::Rotation) {
                Some(None)
            } else {
                b.rotation.map(|p| Some(p.into()))
            },
            value: b.value.map(SecretValue::new),
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(view.into()))
    }

    /// Delete a secret with its versions and grants (its access log stays).
    #[oai(
        path = "/api/vault/:id",
        method = "delete",
        operation_id = "deleteSecret"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        DeleteSecret {
            id: id.0,
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(done())
    }

    /// Reveal the current value: needs a reason and, for users with MFA, a step-up in the last
    /// five minutes (else 403 `step_up_required`).
    #[oai(
        path = "/api/vault/:id/reveal",
        method = "post",
        operation_id = "revealSecret"
    )]
    async fn reveal(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
        body: Json<RevealRequest>,
    ) -> ApiResult<Json<RevealedView>> {
        reveal(&ctx, &auth, origin(remote, req), id.0, None, body.0.reason).await
    }

    /// Reveal one version's value (same rules as revealing the current one).
    #[oai(
        path = "/api/vault/:id/versions/:version/reveal",
        method = "post",
        operation_id = "revealSecretVersion"
    )]
    #[expect(
        clippy::too_many_arguments,
        reason = "path, body and the request's origin"
    )]
    async fn reveal_version(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
        #[oai(validator(minimum(value = "1")))] version: Path<i64>,
        body: Json<RevealRequest>,
    ) -> ApiResult<Json<RevealedView>> {
        reveal(
            &ctx,
            &auth,
            origin(remote, req),
            id.0,
            Some(version.0),
            body.0.reason,
        )
        .await
    }

    /// Run a script on agents with this secret as an environment variable: a `run_script`
    /// job like `POST /api/jobs` with `secrets` (needs `job:create`, `job:run_script`,
    /// `secret:use` and the secret shared with the caller to use in jobs). The value is sealed
    /// to each target agent and masked as `***` in the output; the answer is the job.
    #[oai(
        path = "/api/vault/:id/use",
        method = "post",
        operation_id = "useSecret"
    )]
    async fn use_in_job(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
        body: Json<UseSecretRequest>,
    ) -> ApiResult<Json<JobView>> {
        let body = body.0;
        let job = UseSecret {
            secret_id: id.0,
            env: body.env,
            targets: body.targets.into(),
            interpreter: body.interpreter.unwrap_or_else(|| "sh".into()),
            script: body.script,
            args: body.args.unwrap_or_default(),
            timeout_s: body.timeout_s,
            origin: origin(remote, req),
        }
        .run(&ctx.domain, engine(&ctx)?, auth.caller())
        .await?;
        Ok(Json(JobView::created(job)))
    }

    /// Rotate now: a new version with the given value or a generated password.
    #[oai(
        path = "/api/vault/:id/rotate",
        method = "post",
        operation_id = "rotateSecret"
    )]
    async fn rotate(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
        body: Json<RotateRequest>,
    ) -> ApiResult<Json<SecretView>> {
        let view = RotateSecret {
            id: id.0,
            value: body.0.value.map(SecretValue::new),
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(view.into()))
    }

    /// A secret's versions, newest first (metadata only).
    #[oai(
        path = "/api/vault/:id/versions",
        method = "get",
        operation_id = "listSecretVersions"
    )]
    async fn versions(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Vec<VersionView>>> {
        let versions = ListVersions {
            id: id.0,
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(versions.into_iter().map(VersionView::from).collect()))
    }

    /// Who did what with the secret, newest first (its owner and org admins).
    #[oai(
        path = "/api/vault/:id/access-logs",
        method = "get",
        operation_id = "listSecretAccessLog"
    )]
    async fn access_log(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        before: Query<Option<Uuid>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))] limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<AccessLogEntryView>>> {
        let entries = ReadAccessLog {
            id: id.0,
            before: before.0,
            limit: limit.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(
            entries.into_iter().map(AccessLogEntryView::from).collect(),
        ))
    }

    /// The grants on a secret.
    #[oai(
        path = "/api/vault/:id/permissions",
        method = "get",
        operation_id = "listSecretGrants"
    )]
    async fn grants(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Vec<GrantView>>> {
        let grants = ListGrants { id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(Json(grants.into_iter().map(GrantView::from).collect()))
    }

    /// Share a secret with a user or a role (replaces that subject's grant).
    #[oai(
        path = "/api/vault/:id/share",
        method = "post",
        operation_id = "shareSecret"
    )]
    async fn share(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
        body: Json<ShareRequest>,
    ) -> ApiResult<Json<GrantView>> {
        let b = body.0;
        let grant = ShareSecret {
            id: id.0,
            subject: subject(b.subject_kind, &b.subject)?,
            flags: GrantFlags {
                read: b.read,
                reveal: b.reveal,
                use_in_jobs: b.use_in_jobs,
                write: b.write,
            },
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(grant.into()))
    }

    /// Remove a grant.
    #[oai(
        path = "/api/vault/permissions/:id",
        method = "delete",
        operation_id = "deleteSecretGrant"
    )]
    async fn unshare(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &RemoteAddr,
        req: &poem::Request,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        UnshareSecret {
            grant_id: id.0,
            origin: origin(remote, req),
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(done())
    }
}

async fn reveal(
    ctx: &ApiContext,
    auth: &Auth,
    origin: Origin,
    id: Uuid,
    version: Option<i64>,
    reason: String,
) -> ApiResult<Json<RevealedView>> {
    let revealed = RevealSecret {
        id,
        version,
        reason,
        origin,
    }
    .run(&ctx.domain, auth.caller())
    .await?;
    Ok(Json(RevealedView {
        secret_id: revealed.secret_id,
        version: revealed.version,
        value: revealed.value.to_string(),
    }))
}
