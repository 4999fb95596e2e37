//! Jobs: create (validated, permission per type, capability-checked, signed per target), list,
//! detail with per-state counts, per-agent results, cancel and stats.

use std::collections::BTreeMap;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use reap3r_actors::jobs::{JobError, NewJobRequest};
use reap3r_store::{
    Job, JobFilter, JobStatus, JobTarget, JobTargetSelector, TargetCounts, TargetState, Uuid,
};
use reap3r_wire::{AgentConfig, JobPayload, ScriptJob, ServiceVerb};
use serde::Deserialize;
use serde_json::json;

use super::{ApiTags, audit, page_limit};
use crate::auth::{Auth, Caller};
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::rbac::Permission;

/// The job types, as `type` in requests and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
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
}

impl JobType {
    /// The permission a caller needs for this type, on top of `job:create`.
    fn permission(self) -> Permission {
        match self {
            JobType::RunScript => Permission::JobRunScript,
            JobType::ProcessList => Permission::JobProcessList,
            JobType::ProcessKill => Permission::JobProcessKill,
            JobType::ServiceList => Permission::JobServiceList,
            JobType::ServiceAction => Permission::JobServiceAction,
            JobType::CollectInventory => Permission::JobCollectInventory,
            JobType::ConfigUpdate => Permission::JobConfigUpdate,
            JobType::Reboot => Permission::JobReboot,
            JobType::Shutdown => Permission::JobShutdown,
        }
    }

    fn needs_confirmation(self) -> bool {
        matches!(self, JobType::Reboot | JobType::Shutdown)
    }
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

impl JobTargets {
    fn selector(&self) -> ApiResult<JobTargetSelector> {
        let mut chosen = Vec::new();
        if let Some(ids) = &self.agent_ids {
            chosen.push(JobTargetSelector::Agents(ids.clone()));
        }
        if let Some(ids) = &self.tag_ids {
            chosen.push(JobTargetSelector::Tags(ids.clone()));
        }
        if let Some(id) = self.folder_id {
            chosen.push(JobTargetSelector::Folder(id));
        }
        if self.all == Some(true) {
            chosen.push(JobTargetSelector::All);
        }
        match chosen.len() {
            1 => Ok(chosen.remove(0)),
            _ => Err(ApiError::invalid(
                "targets must name exactly one of agent_ids, tag_ids, folder_id or all: true",
            )),
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

// Payload shapes per type; unknown fields are refused so typos do not pass silently.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptPayload {
    interpreter: String,
    script: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PidPayload {
    pid: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicePayload {
    service: String,
    action: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPayload {
    heartbeat_interval_s: u32,
    metrics_interval_s: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PowerPayload {
    #[serde(default)]
    delay_s: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EmptyPayload {}

fn parse<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> ApiResult<T> {
    serde_json::from_value(value.clone()).map_err(|e| ApiError::invalid(format!("payload: {e}")))
}

/// Turns the request's `payload` into what the agent receives.
fn job_payload(job_type: JobType, payload: &serde_json::Value) -> ApiResult<JobPayload> {
    Ok(match job_type {
        JobType::RunScript => {
            let p: ScriptPayload = parse(payload)?;
            JobPayload::RunScript(ScriptJob {
                interpreter: p.interpreter,
                script: p.script,
                args: p.args,
                env: p.env.into_iter().collect(),
                working_dir: p.working_dir,
            })
        }
        JobType::ProcessKill => JobPayload::ProcessKill {
            pid: parse::<PidPayload>(payload)?.pid,
        },
        JobType::ServiceAction => {
            let p: ServicePayload = parse(payload)?;
            let action = match p.action.as_str() {
                "start" => ServiceVerb::Start,
                "stop" => ServiceVerb::Stop,
                "restart" => ServiceVerb::Restart,
                "status" => ServiceVerb::Status,
                _ => {
                    return Err(ApiError::invalid(
                        "payload: action must be start, stop, restart or status",
                    ));
                }
            };
            JobPayload::ServiceAction {
                service: p.service,
                action,
            }
        }
        JobType::ConfigUpdate => {
            let p: ConfigPayload = parse(payload)?;
            let range = AgentConfig::MIN_INTERVAL_S..=AgentConfig::MAX_INTERVAL_S;
            if !range.contains(&p.heartbeat_interval_s) || !range.contains(&p.metrics_interval_s) {
                return Err(ApiError::invalid(
                    "payload: intervals must be between 1 and 3600 seconds",
                ));
            }
            JobPayload::ConfigUpdate(AgentConfig {
                heartbeat_interval_s: p.heartbeat_interval_s,
                metrics_interval_s: p.metrics_interval_s,
            })
        }
        JobType::Reboot => JobPayload::Reboot {
            delay_s: parse::<PowerPayload>(payload)?.delay_s,
        },
        JobType::Shutdown => JobPayload::Shutdown {
            delay_s: parse::<PowerPayload>(payload)?.delay_s,
        },
        other => {
            parse::<EmptyPayload>(payload)?;
            match other {
                JobType::ProcessList => JobPayload::ProcessList,
                JobType::ServiceList => JobPayload::ServiceList,
                _ => JobPayload::CollectInventory,
            }
        }
    })
}

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        match err {
            JobError::Invalid(msg) => ApiError::invalid(msg),
            JobError::NoTargets => ApiError::bad_request("no_targets", err.to_string()),
            JobError::Unsupported { .. } => {
                ApiError::bad_request("unsupported_by_agent", err.to_string())
            }
            JobError::NotFound => ApiError::not_found("job"),
            JobError::Finished => ApiError::conflict(err.to_string()),
            JobError::Unavailable => ApiError::unavailable(err.to_string()),
            JobError::Store(e) => e.into(),
        }
    }
}

fn engine(ctx: &ApiContext) -> ApiResult<&reap3r_actors::JobService> {
    ctx.jobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("the job engine is not running"))
}

async fn job_in_org(ctx: &ApiContext, caller: &Caller, id: Uuid) -> ApiResult<Job> {
    ctx.store
        .job(Some(caller.org_id), id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))
}

fn encode_cursor(j: &Job) -> String {
    format!("{}_{}", j.created_at, j.id)
}

fn decode_cursor(s: &str) -> ApiResult<(i64, Uuid)> {
    let bad = || ApiError::invalid("cursor is not one this API returned");
    let (at, id) = s.split_once('_').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        Uuid::parse_str(id).map_err(|_| bad())?,
    ))
}

fn job_target(id: Uuid) -> String {
    format!("job:{id}")
}

/// Largest results page; one below the store's cap so the extra row fits.
const MAX_RESULT_PAGE: i64 = 500;

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
        body: Json<CreateJobRequest>,
    ) -> ApiResult<Json<JobView>> {
        let caller = auth.caller();
        caller.require(body.job_type.permission())?;
        if body.job_type.needs_confirmation() && body.confirm != Some(true) {
            return Err(ApiError::bad_request(
                "confirmation_required",
                "reboot and shutdown jobs need \"confirm\": true",
            ));
        }
        let raw = body.payload.clone().unwrap_or_else(|| json!({}));
        if !raw.is_object() {
            return Err(ApiError::invalid("payload must be a JSON object"));
        }
        let payload = job_payload(body.job_type, &raw)?;
        // The script itself is in the job record; the audit log keeps its hash, not its text.
        let mut shown = raw.clone();
        if let Some(script) = shown.get("script").and_then(|s| s.as_str()) {
            let hash = blake3::hash(script.as_bytes()).to_hex().to_string();
            shown["script_blake3"] = json!(hash);
        }
        let req = NewJobRequest {
            org_id: caller.org_id,
            created_by: caller.actor(),
            payload,
            payload_json: raw,
            targets: body.targets.selector()?,
            timeout_s: body.timeout_s,
            expires_at: body.expires_at,
            batch_size: body.batch_size,
        };
        let job = engine(&ctx)?.create(req).await?;
        if let Some(o) = shown.as_object_mut() {
            o.remove("script");
        }
        audit(
            &ctx,
            caller,
            "job.create",
            Some(job_target(job.id)),
            json!({
                "type": job.job_type,
                "targets": job.targets,
                "total_targets": job.total_targets,
                "timeout_s": job.timeout_s,
                "payload": shown,
            }),
        )
        .await?;
        let counts = TargetCounts {
            queued: job.total_targets,
            ..Default::default()
        };
        Ok(Json(JobView::new(job, Some(counts))))
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
        let limit = page_limit(limit.0, 200)?;
        let filter = JobFilter {
            status: status.0.map(|s| match s {
                JobStatusView::Active => JobStatus::Active,
                JobStatusView::Completed => JobStatus::Completed,
                JobStatusView::Cancelled => JobStatus::Cancelled,
            }),
            job_type: job_type.0.map(|t| type_name(t).to_owned()),
            created_by: None,
            before: cursor.0.as_deref().map(decode_cursor).transpose()?,
        };
        let mut jobs = ctx
            .store
            .list_jobs(auth.caller().org_id, &filter, limit + 1)
            .await?;
        let more = jobs.len() as i64 > limit;
        jobs.truncate(limit as usize);
        let next_cursor = more.then(|| jobs.last().map(encode_cursor)).flatten();
        Ok(Json(JobPage {
            items: jobs.into_iter().map(|j| JobView::new(j, None)).collect(),
            next_cursor,
        }))
    }

    /// Job counts by status and target counts by state, for dashboards.
    #[oai(path = "/api/jobs/stats", method = "get", operation_id = "getJobStats")]
    async fn stats(&self, ctx: Data<&ApiContext>, auth: Auth) -> ApiResult<Json<JobStatsView>> {
        let s = ctx.store.job_stats(auth.caller().org_id).await?;
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
        let job = job_in_org(&ctx, auth.caller(), id.0).await?;
        let counts = ctx.store.job_target_counts(job.id).await?;
        Ok(Json(JobView::new(job, Some(counts))))
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
        // One extra row tells whether another page exists, within the store's page cap.
        let limit = page_limit(limit.0, MAX_RESULT_PAGE)?;
        let caller = auth.caller();
        let job = job_in_org(&ctx, caller, id.0).await?;
        let mut rows = ctx
            .store
            .list_job_targets(
                caller.org_id,
                job.id,
                state.0.map(TargetState::from),
                after.0,
                limit + 1,
            )
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|r| r.agent_id.to_string()))
            .flatten();
        Ok(Json(JobResultPage {
            items: rows.into_iter().map(JobResultView::from).collect(),
            next_cursor,
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
        let caller = auth.caller();
        let row = ctx
            .store
            .job_target(caller.org_id, id.0, agent_id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("job result"))?;
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
        let caller = auth.caller();
        let job = engine(&ctx)?.cancel(caller.org_id, id.0).await?;
        audit(
            &ctx,
            caller,
            "job.cancel",
            Some(job_target(job.id)),
            json!({ "type": job.job_type }),
        )
        .await?;
        let counts = ctx.store.job_target_counts(job.id).await?;
        Ok(Json(JobView::new(job, Some(counts))))
    }
}

fn type_name(t: JobType) -> &'static str {
    match t {
        JobType::RunScript => "run_script",
        JobType::ProcessList => "process_list",
        JobType::ProcessKill => "process_kill",
        JobType::ServiceList => "service_list",
        JobType::ServiceAction => "service_action",
        JobType::CollectInventory => "collect_inventory",
        JobType::ConfigUpdate => "config_update",
        JobType::Reboot => "reboot",
        JobType::Shutdown => "shutdown",
    }
}
