//! Jobs over HTTP: create, list, detail with per-state counts, per-agent results, cancel and
//! stats, each mapped to its operation in `reap3r_actors::jobs`; and the request and answer
//! types.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use reap3r_actors::jobs::{
    CancelJob, CreateJob, GetJob, GetJobResult, GetJobStats, JobDetail, JobEngine, JobTargetChoice,
    ListJobResults, ListJobs,
};
use reap3r_actors::vault::{JobWithSecrets, SecretEnv};
use reap3r_store::{Job, JobStatus, JobTarget, TargetCounts, TargetState, Uuid};

use super::ApiTags;
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

// The API's face of the one list of job types (`reap3r_wire::JobType`): the two convert both
// ways, so a type missing here does not compile.
/// The job types, as `type` in requests and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case", remote = "reap3r_wire::JobType")]
pub enum JobType {
    RunScript,
    ProcessList,
    ProcessKill,
    ServiceList,
    ServiceAction,
    CollectInventory,
    ConfigUpdate,
    Reboot,
    Shutdown,
    WakeOnLan,
}

/// Which agents run the job: exactly one of the fields.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobTargets {
    /// These agents (1 to 10,000 ids).
    #[oai(validator(min_items = 1, max_items = 10000))]
    pub agent_ids: Option<Vec<Uuid>>,
    /// Every agent carrying any of these tags.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub tag_ids: Option<Vec<Uuid>>,
    /// Every agent in this folder or a folder below it.
    pub folder_id: Option<Uuid>,
    /// Every agent of the organisation.
    pub all: Option<bool>,
}

impl From<JobTargets> for JobTargetChoice {
    fn from(t: JobTargets) -> Self {
        Self {
            agent_ids: t.agent_ids,
            tag_ids: t.tag_ids,
            folder_id: t.folder_id,
            all: t.all,
        }
    }
}

/// A new job.
#[derive(Debug, Object)]
pub struct CreateJobRequest {
    #[oai(rename = "type")]
    pub job_type: JobType,
    pub targets: JobTargets,
    /// Depends on `type`: run_script `{interpreter: sh|bash|python3|pwsh, script, args?, env?
    /// (object), working_dir?}`; process_kill `{pid}`; service_action `{service, action:
    /// start|stop|restart|status}`; config_update `{heartbeat_interval_s, metrics_interval_s}`;
    /// reboot and shutdown `{delay_s?}`; the other types take `{}` or nothing.
    pub payload: Option<serde_json::Value>,
    /// The agent kills the job after this many seconds (1 to 86,400).
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub timeout_s: u32,
    /// Unix ms after which agents that have not received the job no longer get it.
    pub expires_at: Option<i64>,
    /// Rolling fan-out: at most this many agents run the job at once.
    #[oai(validator(minimum(value = "1"), maximum(value = "100000")))]
    pub batch_size: Option<u32>,
    /// Must be `true` for reboot and shutdown.
    pub confirm: Option<bool>,
    /// run_script only: vault secrets passed to the script as environment variables, sealed to
    /// each target agent (needs `secret:use` and each secret shared with the caller to use in
    /// jobs; masked as `***` in the output). The job and its records hold the names only.
    #[oai(validator(max_items = 16))]
    pub secrets: Option<Vec<JobSecretRef>>,
}

/// One environment variable from a vault secret (its current version).
#[derive(Debug, Object)]
pub struct JobSecretRef {
    /// The variable's name: letters, digits and `_`, not starting with a digit.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub env: String,
    pub secret_id: Uuid,
}

/// Targets per state.
#[derive(Debug, Clone, Object)]
pub struct TargetCountsView {
    pub total: i64,
    pub queued: i64,
    pub dispatched: i64,
    pub acked: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub cancelled: i64,
    pub expired: i64,
}

impl From<TargetCounts> for TargetCountsView {
    fn from(c: TargetCounts) -> Self {
        Self {
            total: c.total(),
            queued: c.queued,
            dispatched: c.dispatched,
            acked: c.acked,
            running: c.running,
            succeeded: c.succeeded,
            failed: c.failed,
            timed_out: c.timed_out,
            cancelled: c.cancelled,
            expired: c.expired,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum JobStatusView {
    Active,
    Completed,
    Cancelled,
}

impl From<JobStatus> for JobStatusView {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Active => JobStatusView::Active,
            JobStatus::Completed => JobStatusView::Completed,
            JobStatus::Cancelled => JobStatusView::Cancelled,
        }
    }
}

/// A job; `counts` (targets per state) is present in detail, create and cancel answers.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobView {
    pub id: Uuid,
    pub org_id: Uuid,
    #[oai(rename = "type")]
    pub job_type: String,
    pub status: JobStatusView,
    pub payload: serde_json::Value,
    pub targets: serde_json::Value,
    pub created_by: String,
    pub created_at: i64,
    pub timeout_s: i64,
    pub expires_at: Option<i64>,
    pub batch_size: Option<i64>,
    pub cancel_requested_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub total_targets: i64,
    // No doc comment: on a `$ref` field it becomes an `allOf` (see `RoleName`).
    pub counts: Option<TargetCountsView>,
}

impl JobView {
    fn new(j: Job, counts: Option<TargetCounts>) -> Self {
        Self {
            id: j.id,
            org_id: j.org_id,
            job_type: j.job_type,
            status: j.status.into(),
            payload: j.payload,
            targets: j.targets,
            created_by: j.created_by,
            created_at: j.created_at,
            timeout_s: j.timeout_s,
            expires_at: j.expires_at,
            batch_size: j.batch_size,
            cancel_requested_at: j.cancel_requested_at,
            finished_at: j.finished_at,
            total_targets: j.total_targets,
            counts: counts.map(TargetCountsView::from),
        }
    }

    /// A job just created: every target queued.
    pub(crate) fn created(job: Job) -> Self {
        let counts = TargetCounts {
            queued: job.total_targets,
            ..Default::default()
        };
        Self::new(job, Some(counts))
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobPage {
    pub items: Vec<JobView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TargetStateView {
    Queued,
    Dispatched,
    Acked,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Expired,
}

impl From<TargetState> for TargetStateView {
    fn from(s: TargetState) -> Self {
        match s {
            TargetState::Queued => Self::Queued,
            TargetState::Dispatched => Self::Dispatched,
            TargetState::Acked => Self::Acked,
            TargetState::Running => Self::Running,
            TargetState::Succeeded => Self::Succeeded,
            TargetState::Failed => Self::Failed,
            TargetState::TimedOut => Self::TimedOut,
            TargetState::Cancelled => Self::Cancelled,
            TargetState::Expired => Self::Expired,
        }
    }
}

impl From<TargetStateView> for TargetState {
    fn from(s: TargetStateView) -> Self {
        match s {
            TargetStateView::Queued => Self::Queued,
            TargetStateView::Dispatched => Self::Dispatched,
            TargetStateView::Acked => Self::Acked,
            TargetStateView::Running => Self::Running,
            TargetStateView::Succeeded => Self::Succeeded,
            TargetStateView::Failed => Self::Failed,
            TargetStateView::TimedOut => Self::TimedOut,
            TargetStateView::Cancelled => Self::Cancelled,
            TargetStateView::Expired => Self::Expired,
        }
    }
}

/// One agent's part of a job.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobResultView {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    pub state: TargetStateView,
    pub exit_code: Option<i64>,
    /// Captured stdout, at most 64 KiB.
    pub stdout: String,
    /// Captured stderr, at most 32 KiB.
    pub stderr: String,
    /// The agent dropped stdout past the cap.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Structured result (process list, services, inventory).
    pub data: Option<serde_json::Value>,
    pub error: Option<String>,
    pub queued_at: i64,
    pub dispatched_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// finished_at − started_at, when both are known.
    pub duration_ms: Option<i64>,
}

impl From<JobTarget> for JobResultView {
    fn from(t: JobTarget) -> Self {
        let data = t.data.as_deref().map(|d| {
            serde_json::from_str(d).unwrap_or_else(|_| serde_json::Value::String(d.to_owned()))
        });
        Self {
            job_id: t.job_id,
            agent_id: t.agent_id,
            state: t.state.into(),
            exit_code: t.exit_code,
            stdout: t.stdout,
            stderr: t.stderr,
            stdout_truncated: t.stdout_truncated,
            stderr_truncated: t.stderr_truncated,
            data,
            error: t.error,
            queued_at: t.queued_at,
            dispatched_at: t.dispatched_at,
            acked_at: t.acked_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            duration_ms: t.started_at.zip(t.finished_at).map(|(s, f)| f - s),
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobResultPage {
    pub items: Vec<JobResultView>,
    /// Pass as `after` for the next page.
    pub next_cursor: Option<String>,
}

/// Jobs of the organisation by status; `targets` counts the targets of all of them by state.
#[derive(Debug, Object)]
pub struct JobStatsView {
    pub active: i64,
    pub completed: i64,
    pub cancelled: i64,
    // No doc comment: on a `$ref` field it becomes an `allOf` (see `RoleName`).
    pub targets: TargetCountsView,
}

/// The job engine, where a node runs one.
pub(crate) fn engine(ctx: &ApiContext) -> ApiResult<&JobEngine> {
    ctx.jobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("the job engine is not running"))
}

impl From<JobStatusView> for JobStatus {
    fn from(s: JobStatusView) -> Self {
        match s {
            JobStatusView::Active => JobStatus::Active,
            JobStatusView::Completed => JobStatus::Completed,
            JobStatusView::Cancelled => JobStatus::Cancelled,
        }
    }
}

impl From<JobDetail> for JobView {
    fn from(d: JobDetail) -> Self {
        JobView::new(d.job, Some(d.counts))
    }
}

pub struct JobsApi;

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Create a job. Needs `job:create` and the type's own permission (`job:run_script`, …);
    /// every targeted agent must report that it can run the type.
    #[oai(path = "/api/jobs", method = "post", operation_id = "createJob")]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        remote: &poem::web::RemoteAddr,
        req: &poem::Request,
        body: Json<CreateJobRequest>,
    ) -> ApiResult<Json<JobView>> {
        let body = body.0;
        let job = JobWithSecrets {
            job: CreateJob {
                job_type: body.job_type.into(),
                targets: body.targets.into(),
                payload: body.payload,
                timeout_s: body.timeout_s,
                expires_at: body.expires_at,
                batch_size: body.batch_size,
                confirm: body.confirm,
                secrets: None,
            },
            secrets: body
                .secrets
                .unwrap_or_default()
                .into_iter()
                .map(|r| SecretEnv {
                    env: r.env,
                    secret_id: r.secret_id,
                })
                .collect(),
            origin: super::auth::origin(remote, req),
        }
        .run(&ctx.domain, engine(&ctx)?, auth.caller())
        .await?;
        Ok(Json(JobView::created(job)))
    }

    /// List jobs, newest first.
    #[oai(path = "/api/jobs", method = "get", operation_id = "listJobs")]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// Only jobs in this status.
        status: Query<Option<JobStatusView>>,
        /// Only jobs of this type.
        #[oai(name = "type")]
        job_type: Query<Option<JobType>>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 100))]
        cursor: Query<Option<String>>,
        /// 1 to 200, default 100.
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<JobPage>> {
        let page = ListJobs {
            status: status.0.map(JobStatus::from),
            job_type: job_type.0.map(reap3r_wire::JobType::from),
            cursor: cursor.0,
            limit: limit.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(JobPage {
            items: page
                .items
                .into_iter()
                .map(|j| JobView::new(j, None))
                .collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Job counts by status and target counts by state, for dashboards.
    #[oai(path = "/api/jobs/stats", method = "get", operation_id = "getJobStats")]
    async fn stats(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<JobStatsView>> {
        let s = GetJobStats.run(&ctx.domain, auth.caller()).await?;
        Ok(Json(JobStatsView {
            active: s.active,
            completed: s.completed,
            cancelled: s.cancelled,
            targets: s.targets.into(),
        }))
    }

    /// One job with its per-state target counts.
    #[oai(path = "/api/jobs/:id", method = "get", operation_id = "getJob")]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<JobView>> {
        let detail = GetJob { job_id: id.0 }
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(Json(detail.into()))
    }

    /// Per-agent results of a job, by agent id, one page at a time.
    #[oai(
        path = "/api/jobs/:id/results",
        method = "get",
        operation_id = "listJobResults"
    )]
    async fn results(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        /// Only agents in this state.
        state: Query<Option<TargetStateView>>,
        /// `next_cursor` from the previous page.
        after: Query<Option<Uuid>>,
        /// 1 to 500, default 100.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<JobResultPage>> {
        let page = ListJobResults {
            job_id: id.0,
            state: state.0.map(TargetState::from),
            after: after.0,
            limit: limit.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(JobResultPage {
            items: page.items.into_iter().map(JobResultView::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// One agent's result of a job.
    #[oai(
        path = "/api/jobs/:id/results/:agent_id",
        method = "get",
        operation_id = "getJobResult"
    )]
    async fn result(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        agent_id: Path<Uuid>,
    ) -> ApiResult<Json<JobResultView>> {
        let row = GetJobResult {
            job_id: id.0,
            agent_id: agent_id.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(row.into()))
    }

    /// Cancel a job: queued agents never get it, running ones are told to kill it.
    #[oai(
        path = "/api/jobs/:id/cancel",
        method = "post",
        operation_id = "cancelJob"
    )]
    async fn cancel(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<JobView>> {
        let detail = CancelJob { job_id: id.0 }
            .run(&ctx.domain, engine(&ctx)?, auth.caller())
            .await?;
        Ok(Json(detail.into()))
    }
}

#[cfg(test)]
mod tests {
    use reap3r_actors::jobs::{
        MAX_JOB_AGENT_IDS, MAX_JOB_CURSOR_CHARS, MAX_JOB_LIST_PAGE, MAX_JOB_RESULT_PAGE,
        MAX_JOB_TAG_IDS, MAX_JOB_TARGETS, MAX_JOB_TIMEOUT_S,
    };
    use serde_json::Value;

    fn spec() -> Value {
        serde_json::from_str(&crate::openapi_json()).unwrap()
    }

    fn query_param<'a>(spec: &'a Value, path: &str, name: &str) -> &'a Value {
        spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| &p["schema"])
            .unwrap()
    }

    /// The schema's validators take literals; these keep them equal to the domain's limits.
    #[test]
    fn served_spec_bounds_are_the_domain_limits() {
        let spec = spec();
        let schemas = &spec["components"]["schemas"];
        let create = &schemas["CreateJobRequest"]["properties"];
        assert_eq!(create["timeout_s"]["minimum"], 1.0);
        assert_eq!(create["timeout_s"]["maximum"], f64::from(MAX_JOB_TIMEOUT_S));
        assert_eq!(create["batch_size"]["minimum"], 1.0);
        assert_eq!(create["batch_size"]["maximum"], MAX_JOB_TARGETS as f64);
        let targets = &schemas["JobTargets"]["properties"];
        assert_eq!(targets["agent_ids"]["minItems"], 1);
        assert_eq!(targets["agent_ids"]["maxItems"], MAX_JOB_AGENT_IDS);
        assert_eq!(targets["tag_ids"]["minItems"], 1);
        assert_eq!(targets["tag_ids"]["maxItems"], MAX_JOB_TAG_IDS);
        let list_limit = query_param(&spec, "/api/jobs", "limit");
        assert_eq!(list_limit["maximum"], MAX_JOB_LIST_PAGE as f64);
        let cursor = query_param(&spec, "/api/jobs", "cursor");
        assert_eq!(cursor["maxLength"], MAX_JOB_CURSOR_CHARS);
        let results_limit = query_param(&spec, "/api/jobs/{id}/results", "limit");
        assert_eq!(results_limit["maximum"], MAX_JOB_RESULT_PAGE as f64);
    }

    /// The API's job types are the list's, by the same names.
    #[test]
    fn served_job_types_are_the_list() {
        let spec = spec();
        let served: Vec<&str> = spec["components"]["schemas"]["JobType"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let listed: Vec<&str> = reap3r_wire::JobType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(served, listed);
    }
}
