//! Jobs: one `jobs` row per request and one `job_targets` row per (job, agent), with the guarded
//! writes that make results exactly-once. A target's state only moves forward and never leaves a
//! terminal state: every UPDATE here carries that guard in its WHERE clause, so a late, replayed
//! or concurrent write simply matches no row. See docs/JOBS.md for the lifecycle.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::Store;
use crate::db::{
    Conditions, bool_int, get_bool, get_i64, get_json, get_opt_i64, get_opt_str, get_str, get_uuid,
    placeholders, to_json_text, uuid_text,
};
use crate::error::{Result, StoreError, map_constraint};

/// Most jobs [`Store::list_jobs`] returns in one call.
pub const MAX_JOB_PAGE: i64 = 1_000;
/// Most targets [`Store::list_job_targets`] returns in one call.
pub const MAX_JOB_TARGET_PAGE: i64 = 1_000;

/// Target rows per multi-row INSERT: 3 parameters each (plus 3 shared), far below PostgreSQL's
/// 65535 and SQLite's 32766 bind limits.
const INSERT_CHUNK: usize = 400;
/// Ids per `IN (...)` list.
const ID_CHUNK: usize = 400;
/// How many offending ids an error message names.
const MAX_NAMED_IDS: usize = 5;

/// Where one agent's part of a job stands. The last five are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
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

impl TargetState {
    pub const ALL: [TargetState; 9] = [
        TargetState::Queued,
        TargetState::Dispatched,
        TargetState::Acked,
        TargetState::Running,
        TargetState::Succeeded,
        TargetState::Failed,
        TargetState::TimedOut,
        TargetState::Cancelled,
        TargetState::Expired,
    ];

    pub const TERMINAL: [TargetState; 5] = [
        TargetState::Succeeded,
        TargetState::Failed,
        TargetState::TimedOut,
        TargetState::Cancelled,
        TargetState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Queued => "queued",
            TargetState::Dispatched => "dispatched",
            TargetState::Acked => "acked",
            TargetState::Running => "running",
            TargetState::Succeeded => "succeeded",
            TargetState::Failed => "failed",
            TargetState::TimedOut => "timed_out",
            TargetState::Cancelled => "cancelled",
            TargetState::Expired => "expired",
        }
    }

    /// Whether the state is final: once stored, it never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TargetState::Succeeded
                | TargetState::Failed
                | TargetState::TimedOut
                | TargetState::Cancelled
                | TargetState::Expired
        )
    }
}

impl FromStr for TargetState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        TargetState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("unknown target state {s:?}")))
    }
}

impl std::fmt::Display for TargetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SQL list of terminal target states; kept equal to [`TargetState::TERMINAL`] by a test.
const TERMINAL_SQL: &str = "('succeeded', 'failed', 'timed_out', 'cancelled', 'expired')";

/// A job as a whole. It is `Active` until its actor finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Active,
    Completed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 3] = [
        JobStatus::Active,
        JobStatus::Completed,
        JobStatus::Cancelled,
    ];

    pub const TERMINAL: [JobStatus; 2] = [JobStatus::Completed, JobStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Active => "active",
            JobStatus::Completed => "completed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Active)
    }
}

impl FromStr for JobStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        JobStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("unknown job status {s:?}")))
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Store::create_job`] stores for the job itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub id: Uuid,
    pub org_id: Uuid,
    pub job_type: String,
    /// The payload as given to the API, for display.
    pub payload: serde_json::Value,
    /// Hex of the encoded `JobSpec` every grant's `spec_hash` covers.
    pub spec_hex: String,
    /// The request's target selector, for display.
    pub targets: serde_json::Value,
    pub created_by: String,
    pub timeout_s: i64,
    pub expires_at: Option<i64>,
    pub batch_size: Option<i64>,
}

/// One agent of a new job, with its signed grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJobTarget {
    pub agent_id: Uuid,
    pub grant_hex: String,
    pub signature_hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub org_id: Uuid,
    pub job_type: String,
    pub payload: serde_json::Value,
    pub spec_hex: String,
    pub targets: serde_json::Value,
    pub created_by: String,
    pub created_at: i64,
    pub timeout_s: i64,
    pub expires_at: Option<i64>,
    pub batch_size: Option<i64>,
    pub status: JobStatus,
    pub cancel_requested_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub total_targets: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTarget {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    pub org_id: Uuid,
    pub state: TargetState,
    pub grant_hex: String,
    pub signature_hex: String,
    pub queued_at: i64,
    pub dispatched_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Structured result, JSON text.
    pub data: Option<String>,
    pub error: Option<String>,
    pub updated_at: i64,
}

/// How many targets are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetCounts {
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

impl TargetCounts {
    pub fn get(&self, state: TargetState) -> i64 {
        match state {
            TargetState::Queued => self.queued,
            TargetState::Dispatched => self.dispatched,
            TargetState::Acked => self.acked,
            TargetState::Running => self.running,
            TargetState::Succeeded => self.succeeded,
            TargetState::Failed => self.failed,
            TargetState::TimedOut => self.timed_out,
            TargetState::Cancelled => self.cancelled,
            TargetState::Expired => self.expired,
        }
    }

    fn slot(&mut self, state: TargetState) -> &mut i64 {
        match state {
            TargetState::Queued => &mut self.queued,
            TargetState::Dispatched => &mut self.dispatched,
            TargetState::Acked => &mut self.acked,
            TargetState::Running => &mut self.running,
            TargetState::Succeeded => &mut self.succeeded,
            TargetState::Failed => &mut self.failed,
            TargetState::TimedOut => &mut self.timed_out,
            TargetState::Cancelled => &mut self.cancelled,
            TargetState::Expired => &mut self.expired,
        }
    }

    /// Counts one more target in `state`.
    pub fn add(&mut self, state: TargetState) {
        *self.slot(state) += 1;
    }

    /// Counts one target fewer in `state` (not below zero); with [`TargetCounts::add`], moves a
    /// target from one state to another.
    pub fn remove(&mut self, state: TargetState) {
        let slot = self.slot(state);
        *slot = (*slot - 1).max(0);
    }

    pub fn total(&self) -> i64 {
        TargetState::ALL.into_iter().map(|s| self.get(s)).sum()
    }

    /// Targets in a terminal state.
    pub fn finished(&self) -> i64 {
        TargetState::TERMINAL.into_iter().map(|s| self.get(s)).sum()
    }

    /// Targets dispatched but not finished (dispatched, acked, running): what `batch_size`
    /// limits.
    pub fn in_flight(&self) -> i64 {
        self.dispatched + self.acked + self.running
    }
}

/// A target as a job actor loads it: enough to dispatch it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTargetGrant {
    pub agent_id: Uuid,
    pub state: TargetState,
    pub dispatched_at: Option<i64>,
    pub grant_hex: String,
    pub signature_hex: String,
}

/// A non-terminal step of one target, for [`Store::transition_targets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetTransition {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    /// `Dispatched`, `Acked` or `Running`.
    pub to: TargetState,
    pub at_ms: i64,
}

/// The final result of one target, for [`Store::record_outcomes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetOutcome {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    /// A terminal state.
    pub state: TargetState,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Structured result, JSON text.
    pub data: Option<String>,
    pub error: Option<String>,
    /// Kept only if the target has no `started_at` yet.
    pub started_at: Option<i64>,
    pub finished_at: i64,
}

/// Which agents of an organisation a job is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobTargetSelector {
    Agents(Vec<Uuid>),
    /// Agents carrying any of these tags.
    Tags(Vec<Uuid>),
    /// Agents in this folder or any folder below it.
    Folder(Uuid),
    All,
}

/// Which jobs [`Store::list_jobs`] returns; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<String>,
    pub created_by: Option<String>,
    /// Keyset cursor `(created_at, id)`: the page starts strictly after (older than) it.
    pub before: Option<(i64, Uuid)>,
}

/// An organisation's jobs by status, and the targets of all its jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    pub active: i64,
    pub completed: i64,
    pub cancelled: i64,
    pub targets: TargetCounts,
}

const JOB_COLS: &str = "id, org_id, job_type, payload, spec, targets, created_by, created_at, \
                        timeout_s, expires_at, batch_size, status, cancel_requested_at, \
                        finished_at, total_targets";

const TARGET_COLS: &str = "job_id, agent_id, org_id, state, grant_hex, signature_hex, queued_at, \
                           dispatched_at, acked_at, started_at, finished_at, exit_code, stdout, \
                           stderr, stdout_truncated, stderr_truncated, data, error, updated_at";

/// Agents that may run jobs (aliased `a`): approved and not revoked.
const ELIGIBLE_AGENT: &str = "a.approval = 'approved' AND a.revoked = 0";

const AGENT_TARGET_COLS: &str =
    "a.id AS id, a.capabilities AS capabilities, a.hostname AS hostname";

fn job_from_row(row: &AnyRow) -> Result<Job> {
    Ok(Job {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        job_type: get_str(row, "job_type")?,
        payload: get_json(row, "payload")?,
        spec_hex: get_str(row, "spec")?,
        targets: get_json(row, "targets")?,
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
        timeout_s: get_i64(row, "timeout_s")?,
        expires_at: get_opt_i64(row, "expires_at")?,
        batch_size: get_opt_i64(row, "batch_size")?,
        status: get_str(row, "status")?.parse()?,
        cancel_requested_at: get_opt_i64(row, "cancel_requested_at")?,
        finished_at: get_opt_i64(row, "finished_at")?,
        total_targets: get_i64(row, "total_targets")?,
    })
}

fn target_from_row(row: &AnyRow) -> Result<JobTarget> {
    Ok(JobTarget {
        job_id: get_uuid(row, "job_id")?,
        agent_id: get_uuid(row, "agent_id")?,
        org_id: get_uuid(row, "org_id")?,
        state: get_str(row, "state")?.parse()?,
        grant_hex: get_str(row, "grant_hex")?,
        signature_hex: get_str(row, "signature_hex")?,
        queued_at: get_i64(row, "queued_at")?,
        dispatched_at: get_opt_i64(row, "dispatched_at")?,
        acked_at: get_opt_i64(row, "acked_at")?,
        started_at: get_opt_i64(row, "started_at")?,
        finished_at: get_opt_i64(row, "finished_at")?,
        exit_code: get_opt_i64(row, "exit_code")?,
        stdout: get_str(row, "stdout")?,
        stderr: get_str(row, "stderr")?,
        stdout_truncated: get_bool(row, "stdout_truncated")?,
        stderr_truncated: get_bool(row, "stderr_truncated")?,
        data: get_opt_str(row, "data")?,
        error: get_opt_str(row, "error")?,
        updated_at: get_i64(row, "updated_at")?,
    })
}

fn agent_target_from_row(row: &AnyRow) -> Result<(Uuid, (Vec<String>, String))> {
    Ok((
        get_uuid(row, "id")?,
        (get_json(row, "capabilities")?, get_str(row, "hostname")?),
    ))
}

fn counts_from_rows(rows: &[AnyRow]) -> Result<TargetCounts> {
    let mut counts = TargetCounts::default();
    for row in rows {
        let state: TargetState = get_str(row, "state")?.parse()?;
        *counts.slot(state) += get_i64(row, "n")?;
    }
    Ok(counts)
}

/// PostgreSQL cannot store NUL in TEXT; agent output may contain it. Replacing it (on both
/// backends, so they agree) keeps one odd byte from making a whole result batch unstorable.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Uuids in first-seen order, without repeats.
fn unique_ids(ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// `"a, b, c"`, at most [`MAX_NAMED_IDS`] of them, then `" and N more"`.
fn name_ids(ids: &[Uuid]) -> String {
    let mut text = ids
        .iter()
        .take(MAX_NAMED_IDS)
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > MAX_NAMED_IDS {
        text.push_str(&format!(" and {} more", ids.len() - MAX_NAMED_IDS));
    }
    text
}

/// Positions of `batch` sorted by (job, agent), stable: rows are written in one global order so
/// two overlapping batches cannot take PostgreSQL row locks in opposite orders and deadlock, and
/// among duplicates the first in input order is written first.
fn lock_order<T>(batch: &[T], key: impl Fn(&T) -> (Uuid, Uuid)) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| batch.get(i).map(&key));
    order
}

fn validate_new_job(job: &NewJob, targets: &[NewJobTarget]) -> Result<()> {
    if job.job_type.trim().is_empty() {
        return Err(StoreError::Invalid("job_type is empty".into()));
    }
    if job.timeout_s < 1 {
        return Err(StoreError::Invalid("timeout_s must be at least 1".into()));
    }
    if job.batch_size.is_some_and(|b| b < 1) {
        return Err(StoreError::Invalid("batch_size must be at least 1".into()));
    }
    if targets.is_empty() {
        return Err(StoreError::Invalid(
            "a job needs at least one target".into(),
        ));
    }
    let mut seen = HashSet::with_capacity(targets.len());
    let repeated: Vec<Uuid> = targets
        .iter()
        .map(|t| t.agent_id)
        .filter(|id| !seen.insert(*id))
        .collect();
    if !repeated.is_empty() {
        return Err(StoreError::Invalid(format!(
            "agents targeted more than once: {}",
            name_ids(&unique_ids(&repeated))
        )));
    }
    Ok(())
}

impl Store {
    /// Creates the job (status active, `total_targets` = number of targets) and one queued
    /// target per agent, `queued_at` = `now_ms`, in one write transaction. `Invalid` for an
    /// empty job type, a timeout or batch size below 1, no targets, an agent listed twice or an
    /// unknown organisation; `Conflict` if the job id is taken. The targets are not checked
    /// against the agents table: resolve them with [`Store::resolve_job_targets`] first.
    pub async fn create_job(
        &self,
        job: &NewJob,
        targets: &[NewJobTarget],
        now_ms: i64,
    ) -> Result<Job> {
        validate_new_job(job, targets)?;
        let total = i64::try_from(targets.len())
            .map_err(|_| StoreError::Invalid("too many targets".into()))?;
        let payload = to_json_text(&job.payload, "payload")?;
        let selector = to_json_text(&job.targets, "targets")?;
        let job_id = uuid_text(job.id);
        let org_id = uuid_text(job.org_id);

        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO jobs ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
             'active', NULL, NULL, $12) RETURNING {JOB_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job_id.clone())
            .bind(org_id.clone())
            .bind(job.job_type.trim().to_owned())
            .bind(payload)
            .bind(&job.spec_hex)
            .bind(selector)
            .bind(&job.created_by)
            .bind(now_ms)
            .bind(job.timeout_s)
            .bind(job.expires_at)
            .bind(job.batch_size)
            .bind(total)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                map_constraint(e, "job id already exists", "organisation does not exist")
            })?;
        let stored = job_from_row(&row)?;

        for chunk in targets.chunks(INSERT_CHUNK) {
            // $1..$3 (job, org, now) are shared by every row; each row adds three parameters.
            let values = (0..chunk.len())
                .map(|i| {
                    let p = 4 + 3 * i;
                    format!("($1, ${p}, $2, 'queued', ${}, ${}, $3, $3)", p + 1, p + 2)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO job_targets (job_id, agent_id, org_id, state, grant_hex, \
                 signature_hex, queued_at, updated_at) VALUES {values}"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(job_id.clone())
                .bind(org_id.clone())
                .bind(now_ms);
            for target in chunk {
                query = query
                    .bind(uuid_text(target.agent_id))
                    .bind(&target.grant_hex)
                    .bind(&target.signature_hex);
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(|e| map_constraint(e, "agent targeted more than once", "job not found"))?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The job; in any organisation when `org_id` is `None` (for the job actors).
    pub async fn job(&self, org_id: Option<Uuid>, id: Uuid) -> Result<Option<Job>> {
        let mut c = Conditions::default();
        let p = c.text(uuid_text(id));
        c.and(format!("id = {p}"));
        if let Some(org) = org_id {
            let p = c.text(uuid_text(org));
            c.and(format!("org_id = {p}"));
        }
        let sql = format!("SELECT {JOB_COLS} FROM jobs{}", c.where_sql());
        let row = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// One page of an organisation's jobs matching `filter`, newest first ((created_at, id)
    /// descending), strictly before `filter.before`. `limit` is clamped to 1..=[`MAX_JOB_PAGE`].
    pub async fn list_jobs(
        &self,
        org_id: Uuid,
        filter: &JobFilter,
        limit: i64,
    ) -> Result<Vec<Job>> {
        let mut c = Conditions::default();
        let p = c.text(uuid_text(org_id));
        c.and(format!("org_id = {p}"));
        if let Some(status) = filter.status {
            let p = c.text(status.as_str());
            c.and(format!("status = {p}"));
        }
        if let Some(job_type) = &filter.job_type {
            let p = c.text(job_type.trim());
            c.and(format!("job_type = {p}"));
        }
        if let Some(created_by) = &filter.created_by {
            let p = c.text(created_by.as_str());
            c.and(format!("created_by = {p}"));
        }
        if let Some((created_at, id)) = filter.before {
            let at = c.int(created_at);
            let id = c.text(uuid_text(id));
            c.and(format!(
                "(created_at < {at} OR (created_at = {at} AND id < {id}))"
            ));
        }
        let limit = c.int(limit.clamp(1, MAX_JOB_PAGE));
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs{} ORDER BY created_at DESC, id DESC LIMIT {limit}",
            c.where_sql()
        );
        let rows = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every active job of every organisation, oldest first (for starting job actors).
    pub async fn active_jobs(&self) -> Result<Vec<Job>> {
        let sql =
            format!("SELECT {JOB_COLS} FROM jobs WHERE status = 'active' ORDER BY created_at, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Each target of a job as (agent, state, dispatched_at), by agent id, without the output
    /// columns: what a job actor needs to (re)load.
    pub async fn job_target_states(
        &self,
        job_id: Uuid,
    ) -> Result<Vec<(Uuid, TargetState, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT agent_id, state, dispatched_at FROM job_targets WHERE job_id = $1 \
             ORDER BY agent_id",
        )
        .bind(uuid_text(job_id))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    get_uuid(row, "agent_id")?,
                    get_str(row, "state")?.parse()?,
                    get_opt_i64(row, "dispatched_at")?,
                ))
            })
            .collect()
    }

    /// Each target of a job with its state, dispatch time and signed grant, by agent id, without
    /// the output columns: what a job actor needs to (re)load and dispatch.
    pub async fn job_target_grants(&self, job_id: Uuid) -> Result<Vec<JobTargetGrant>> {
        let rows = sqlx::query(
            "SELECT agent_id, state, dispatched_at, grant_hex, signature_hex FROM job_targets \
             WHERE job_id = $1 ORDER BY agent_id",
        )
        .bind(uuid_text(job_id))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(JobTargetGrant {
                    agent_id: get_uuid(row, "agent_id")?,
                    state: get_str(row, "state")?.parse()?,
                    dispatched_at: get_opt_i64(row, "dispatched_at")?,
                    grant_hex: get_str(row, "grant_hex")?,
                    signature_hex: get_str(row, "signature_hex")?,
                })
            })
            .collect()
    }

    /// One target, if its job is `org_id`'s.
    pub async fn job_target(
        &self,
        org_id: Uuid,
        job_id: Uuid,
        agent_id: Uuid,
    ) -> Result<Option<JobTarget>> {
        let sql = format!(
            "SELECT {TARGET_COLS} FROM job_targets \
             WHERE job_id = $1 AND agent_id = $2 AND org_id = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(job_id))
            .bind(uuid_text(agent_id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(target_from_row).transpose()
    }

    /// One page of a job's targets (empty if the job is not `org_id`'s), by agent id, strictly
    /// after `after_agent`, optionally only those in `state`. `limit` is clamped to
    /// 1..=[`MAX_JOB_TARGET_PAGE`].
    pub async fn list_job_targets(
        &self,
        org_id: Uuid,
        job_id: Uuid,
        state: Option<TargetState>,
        after_agent: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<JobTarget>> {
        let mut c = Conditions::default();
        let p = c.text(uuid_text(job_id));
        c.and(format!("job_id = {p}"));
        let p = c.text(uuid_text(org_id));
        c.and(format!("org_id = {p}"));
        if let Some(state) = state {
            let p = c.text(state.as_str());
            c.and(format!("state = {p}"));
        }
        if let Some(after) = after_agent {
            let p = c.text(uuid_text(after));
            c.and(format!("agent_id > {p}"));
        }
        let limit = c.int(limit.clamp(1, MAX_JOB_TARGET_PAGE));
        let sql = format!(
            "SELECT {TARGET_COLS} FROM job_targets{} ORDER BY agent_id LIMIT {limit}",
            c.where_sql()
        );
        let rows = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(target_from_row).collect()
    }

    /// How many of a job's targets are in each state.
    pub async fn job_target_counts(&self, job_id: Uuid) -> Result<TargetCounts> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM job_targets WHERE job_id = $1 GROUP BY state",
        )
        .bind(uuid_text(job_id))
        .fetch_all(self.pool())
        .await?;
        counts_from_rows(&rows)
    }

    /// Applies non-terminal steps in one write transaction. Each is a guarded UPDATE that only
    /// moves forward: to `Dispatched` from queued (sets `dispatched_at`); to `Acked` from queued
    /// or dispatched (sets `acked_at`, and `dispatched_at` if unset); to `Running` from queued,
    /// dispatched or acked (sets `started_at`, and `dispatched_at` if unset, so the timeout
    /// still applies). `updated_at` becomes `at_ms`. Returns, per input row, whether it applied.
    /// `Invalid` (and nothing written) if any row's `to` is `Queued` or terminal.
    pub async fn transition_targets(&self, batch: &[TargetTransition]) -> Result<Vec<bool>> {
        if let Some(bad) = batch
            .iter()
            .find(|t| t.to.is_terminal() || t.to == TargetState::Queued)
        {
            return Err(StoreError::Invalid(format!(
                "cannot transition a target to {}: only dispatched, acked and running are steps",
                bad.to
            )));
        }
        let mut applied = vec![false; batch.len()];
        if batch.is_empty() {
            return Ok(applied);
        }
        let mut tx = self.begin_write().await?;
        for i in lock_order(batch, |t| (t.job_id, t.agent_id)) {
            let (Some(t), Some(slot)) = (batch.get(i), applied.get_mut(i)) else {
                continue;
            };
            let sql = match t.to {
                TargetState::Dispatched => {
                    "UPDATE job_targets SET state = 'dispatched', dispatched_at = $3, \
                     updated_at = $3 \
                     WHERE job_id = $1 AND agent_id = $2 AND state = 'queued'"
                }
                TargetState::Acked => {
                    "UPDATE job_targets SET state = 'acked', acked_at = $3, \
                     dispatched_at = COALESCE(dispatched_at, $3), updated_at = $3 \
                     WHERE job_id = $1 AND agent_id = $2 AND state IN ('queued', 'dispatched')"
                }
                TargetState::Running => {
                    "UPDATE job_targets SET state = 'running', started_at = $3, \
                     dispatched_at = COALESCE(dispatched_at, $3), updated_at = $3 \
                     WHERE job_id = $1 AND agent_id = $2 \
                       AND state IN ('queued', 'dispatched', 'acked')"
                }
                // Refused above.
                _ => continue,
            };
            let done = sqlx::query(sql)
                .bind(uuid_text(t.job_id))
                .bind(uuid_text(t.agent_id))
                .bind(t.at_ms)
                .execute(&mut *tx)
                .await?;
            *slot = done.rows_affected() > 0;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Stores final results in one write transaction. Each row only applies to a target that is
    /// not yet terminal; returns, per input row, whether it applied (`false`: already terminal
    /// or unknown, so the caller still acknowledges the agent but must not count it). Sets the
    /// state, exit code, output and flags, data, error, `started_at` if unset, `finished_at`,
    /// and `updated_at` = `now_ms`. NUL characters in the texts are replaced by U+FFFD.
    /// `Invalid` (and nothing written) if any row's state is not terminal.
    pub async fn record_outcomes(&self, batch: &[TargetOutcome], now_ms: i64) -> Result<Vec<bool>> {
        if let Some(bad) = batch.iter().find(|o| !o.state.is_terminal()) {
            return Err(StoreError::Invalid(format!(
                "an outcome needs a terminal state, not {}",
                bad.state
            )));
        }
        let mut applied = vec![false; batch.len()];
        if batch.is_empty() {
            return Ok(applied);
        }
        let sql = format!(
            "UPDATE job_targets SET state = $3, exit_code = $4, stdout = $5, stderr = $6, \
             stdout_truncated = $7, stderr_truncated = $8, data = $9, error = $10, \
             started_at = COALESCE(started_at, $11), finished_at = $12, updated_at = $13 \
             WHERE job_id = $1 AND agent_id = $2 AND state NOT IN {TERMINAL_SQL}"
        );
        let mut tx = self.begin_write().await?;
        for i in lock_order(batch, |o| (o.job_id, o.agent_id)) {
            let (Some(o), Some(slot)) = (batch.get(i), applied.get_mut(i)) else {
                continue;
            };
            let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(uuid_text(o.job_id))
                .bind(uuid_text(o.agent_id))
                .bind(o.state.as_str())
                .bind(o.exit_code)
                .bind(storable(&o.stdout))
                .bind(storable(&o.stderr))
                .bind(bool_int(o.stdout_truncated))
                .bind(bool_int(o.stderr_truncated))
                .bind(o.data.as_deref().map(storable))
                .bind(o.error.as_deref().map(storable))
                .bind(o.started_at)
                .bind(o.finished_at)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            *slot = done.rows_affected() > 0;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Moves an active job to `status` (completed or cancelled) and stamps `finished_at`.
    /// Returns whether it changed (`false` if the job is unknown or already finished).
    pub async fn finish_job(&self, job_id: Uuid, status: JobStatus, now_ms: i64) -> Result<bool> {
        if !status.is_terminal() {
            return Err(StoreError::Invalid(format!(
                "a job finishes as completed or cancelled, not {status}"
            )));
        }
        let done = sqlx::query(
            "UPDATE jobs SET status = $2, finished_at = $3 WHERE id = $1 AND status = 'active'",
        )
        .bind(uuid_text(job_id))
        .bind(status.as_str())
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a cancel request on a job of `org_id`: sets `cancel_requested_at` if the job is
    /// active and has none yet. Returns the job as it now is (`None` if it is not `org_id`'s).
    /// The status is unchanged; the job's actor finishes it.
    pub async fn request_job_cancel(
        &self,
        org_id: Uuid,
        job_id: Uuid,
        now_ms: i64,
    ) -> Result<Option<Job>> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET cancel_requested_at = $3 \
             WHERE id = $1 AND org_id = $2 AND status = 'active' \
               AND cancel_requested_at IS NULL",
        )
        .bind(uuid_text(job_id))
        .bind(uuid_text(org_id))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(job_id))
            .bind(uuid_text(org_id))
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// An organisation's jobs by status and the targets of all its jobs by state.
    pub async fn job_stats(&self, org_id: Uuid) -> Result<JobStats> {
        let mut stats = JobStats::default();
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM jobs WHERE org_id = $1 GROUP BY status")
                .bind(uuid_text(org_id))
                .fetch_all(self.pool())
                .await?;
        for row in &rows {
            let n = get_i64(row, "n")?;
            match get_str(row, "status")?.parse()? {
                JobStatus::Active => stats.active += n,
                JobStatus::Completed => stats.completed += n,
                JobStatus::Cancelled => stats.cancelled += n,
            }
        }
        // Through jobs, whose (org_id, ...) index leads to each job's targets by primary key.
        let rows = sqlx::query(
            "SELECT t.state AS state, COUNT(*) AS n FROM jobs j \
             JOIN job_targets t ON t.job_id = j.id \
             WHERE j.org_id = $1 GROUP BY t.state",
        )
        .bind(uuid_text(org_id))
        .fetch_all(self.pool())
        .await?;
        stats.targets = counts_from_rows(&rows)?;
        Ok(stats)
    }

    /// The agents of `org_id` a selector names that may run jobs (approved, not revoked), as
    /// (id, capabilities, hostname), by id, without repeats; empty if none.
    ///
    /// - `Agents`: every id must be such an agent of the organisation, otherwise `Invalid`
    ///   naming (up to five of) the others. Unknown, foreign, pending, rejected and revoked
    ///   agents are reported alike, so the answer says nothing about other organisations.
    /// - `Tags`: agents carrying any of the tags; `Invalid` if a tag is not the organisation's.
    /// - `Folder`: agents in the folder or any folder below it; `Invalid` if the folder is not
    ///   the organisation's.
    /// - `All`: every eligible agent of the organisation.
    pub async fn resolve_job_targets(
        &self,
        org_id: Uuid,
        selector: &JobTargetSelector,
    ) -> Result<Vec<(Uuid, Vec<String>, String)>> {
        let org = uuid_text(org_id);
        let mut found: BTreeMap<Uuid, (Vec<String>, String)> = BTreeMap::new();
        match selector {
            JobTargetSelector::Agents(ids) => {
                let ids = unique_ids(ids);
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT {AGENT_TARGET_COLS} FROM agents a \
                         WHERE a.org_id = $1 AND {ELIGIBLE_AGENT} AND a.id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.clone());
                    for id in chunk {
                        query = query.bind(uuid_text(*id));
                    }
                    for row in query.fetch_all(self.pool()).await? {
                        let (id, agent) = agent_target_from_row(&row)?;
                        found.insert(id, agent);
                    }
                }
                let bad: Vec<Uuid> = ids
                    .into_iter()
                    .filter(|id| !found.contains_key(id))
                    .collect();
                if !bad.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "not agents of this organisation that may run jobs (unknown, pending, \
                         rejected or revoked): {}",
                        name_ids(&bad)
                    )));
                }
            }
            JobTargetSelector::Tags(ids) => {
                let ids = unique_ids(ids);
                let mut known = HashSet::with_capacity(ids.len());
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT id FROM tags WHERE org_id = $1 AND id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.clone());
                    for id in chunk {
                        query = query.bind(uuid_text(*id));
                    }
                    for row in query.fetch_all(self.pool()).await? {
                        known.insert(get_uuid(&row, "id")?);
                    }
                }
                let missing: Vec<Uuid> = ids
                    .iter()
                    .copied()
                    .filter(|id| !known.contains(id))
                    .collect();
                if !missing.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "tags not found: {}",
                        name_ids(&missing)
                    )));
                }
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT {AGENT_TARGET_COLS} FROM agents a \
                         WHERE a.org_id = $1 AND {ELIGIBLE_AGENT} AND EXISTS ( \
                             SELECT 1 FROM agent_tags l \
                             WHERE l.agent_id = a.id AND l.tag_id IN ({}))",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.clone());
                    for id in chunk {
                        query = query.bind(uuid_text(*id));
                    }
                    for row in query.fetch_all(self.pool()).await? {
                        let (id, agent) = agent_target_from_row(&row)?;
                        found.insert(id, agent);
                    }
                }
            }
            JobTargetSelector::Folder(folder_id) => {
                let exists =
                    sqlx::query("SELECT 1 AS one FROM folders WHERE id = $1 AND org_id = $2")
                        .bind(uuid_text(*folder_id))
                        .bind(org.clone())
                        .fetch_optional(self.pool())
                        .await?
                        .is_some();
                if !exists {
                    return Err(StoreError::Invalid("folder not found".into()));
                }
                // UNION (not UNION ALL) stops even on a corrupted, cyclic folder tree.
                let sql = format!(
                    "WITH RECURSIVE subtree (id) AS ( \
                         SELECT id FROM folders WHERE id = $2 AND org_id = $1 \
                         UNION \
                         SELECT f.id FROM folders f JOIN subtree s ON f.parent_id = s.id \
                         WHERE f.org_id = $1 \
                     ) \
                     SELECT {AGENT_TARGET_COLS} FROM agents a \
                     WHERE a.org_id = $1 AND {ELIGIBLE_AGENT} \
                       AND a.folder_id IN (SELECT id FROM subtree)"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(org.clone())
                    .bind(uuid_text(*folder_id))
                    .fetch_all(self.pool())
                    .await?;
                for row in &rows {
                    let (id, agent) = agent_target_from_row(row)?;
                    found.insert(id, agent);
                }
            }
            JobTargetSelector::All => {
                let sql = format!(
                    "SELECT {AGENT_TARGET_COLS} FROM agents a \
                     WHERE a.org_id = $1 AND {ELIGIBLE_AGENT}"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(org.clone())
                    .fetch_all(self.pool())
                    .await?;
                for row in &rows {
                    let (id, agent) = agent_target_from_row(row)?;
                    found.insert(id, agent);
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|(id, (capabilities, hostname))| (id, capabilities, hostname))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_states_round_trip_through_text_and_serde() {
        for state in TargetState::ALL {
            assert_eq!(state.as_str().parse::<TargetState>().unwrap(), state);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
            assert_eq!(
                state.is_terminal(),
                TargetState::TERMINAL.contains(&state),
                "{state}"
            );
        }
        assert_eq!(TargetState::TimedOut.as_str(), "timed_out");
        assert!("TimedOut".parse::<TargetState>().is_err());
    }

    #[test]
    fn job_statuses_round_trip_through_text_and_serde() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
            assert_eq!(status.is_terminal(), JobStatus::TERMINAL.contains(&status));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn terminal_sql_lists_exactly_the_terminal_states() {
        let listed: Vec<String> = TERMINAL_SQL
            .trim_matches(|c| c == '(' || c == ')')
            .split(", ")
            .map(|s| s.trim_matches('\'').to_owned())
            .collect();
        let want: Vec<String> = TargetState::TERMINAL
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        assert_eq!(listed, want);
    }

    #[test]
    fn counts_add_up() {
        let mut c = TargetCounts::default();
        for state in TargetState::ALL {
            c.add(state);
        }
        c.add(TargetState::Running);
        assert_eq!(c.total(), 10);
        assert_eq!(c.finished(), 5);
        assert_eq!(c.in_flight(), 4);
        c.remove(TargetState::Running);
        c.remove(TargetState::Queued);
        c.remove(TargetState::Queued);
        assert_eq!(c.get(TargetState::Queued), 0);
        assert_eq!(c.get(TargetState::Running), 1);
        assert_eq!(c.total(), 8);
    }

    #[test]
    fn selectors_serialise_in_snake_case() {
        let id = Uuid::nil();
        assert_eq!(
            serde_json::to_value(JobTargetSelector::Folder(id)).unwrap(),
            serde_json::json!({ "folder": id.to_string() })
        );
        assert_eq!(
            serde_json::to_value(JobTargetSelector::All).unwrap(),
            serde_json::json!("all")
        );
        let back: JobTargetSelector =
            serde_json::from_value(serde_json::json!({ "agents": [id.to_string()] })).unwrap();
        assert_eq!(back, JobTargetSelector::Agents(vec![id]));
    }

    #[test]
    fn ids_are_named_up_to_five() {
        let ids: Vec<Uuid> = (0..7u128).map(Uuid::from_u128).collect();
        let text = name_ids(&ids);
        assert!(text.ends_with(" and 2 more"), "{text}");
        assert_eq!(text.matches(", ").count(), 4);
        assert_eq!(name_ids(&ids[..1]), ids[0].to_string());
    }

    #[test]
    fn lock_order_is_stable_and_sorted() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let batch = [(b, a), (a, b), (a, a), (a, b)];
        assert_eq!(lock_order(&batch, |&(j, g)| (j, g)), vec![2, 1, 3, 0]);
    }

    #[test]
    fn nul_is_replaced() {
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        assert_eq!(storable("plain"), "plain");
    }

    #[test]
    fn new_jobs_are_validated() {
        let job = NewJob {
            id: Uuid::nil(),
            org_id: Uuid::nil(),
            job_type: "run_script".into(),
            payload: serde_json::json!({}),
            spec_hex: String::new(),
            targets: serde_json::json!("all"),
            created_by: "u".into(),
            timeout_s: 60,
            expires_at: None,
            batch_size: None,
        };
        let target = |n: u128| NewJobTarget {
            agent_id: Uuid::from_u128(n),
            grant_hex: String::new(),
            signature_hex: String::new(),
        };
        assert!(validate_new_job(&job, &[target(1), target(2)]).is_ok());
        assert!(validate_new_job(&job, &[]).is_err());
        assert!(validate_new_job(&job, &[target(1), target(1)]).is_err());
        let mut bad = job.clone();
        bad.timeout_s = 0;
        assert!(validate_new_job(&bad, &[target(1)]).is_err());
        let mut bad = job.clone();
        bad.batch_size = Some(0);
        assert!(validate_new_job(&bad, &[target(1)]).is_err());
        let mut bad = job;
        bad.job_type = " ".into();
        assert!(validate_new_job(&bad, &[target(1)]).is_err());
    }
}
