//! Jobs: one `jobs` row per request and one `job_targets` row per (job, agent), with the guarded
//! writes that make results exactly-once. A target's state only moves forward and never leaves a
//! terminal state: every UPDATE here carries that guard in its WHERE clause, so a late, replayed
//! or concurrent write simply matches no row. See docs/JOBS.md for the lifecycle.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{
    Conditions, bool_int, get_bool, get_i64, get_json, get_opt_i64, get_opt_str, get_str, get_uuid,
    placeholders, to_json_text, uuid_text, values_rows,
};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Backend, Store};

/// Most jobs [`Store::list_jobs`] returns in one call.
pub const MAX_JOB_PAGE: i64 = 1_000;
/// Most targets [`Store::list_job_targets`] returns in one call.
pub const MAX_JOB_TARGET_PAGE: i64 = 1_000;

/// Target rows per multi-row INSERT: 3 parameters each (plus 3 shared), far below PostgreSQL's
/// 65535 and SQLite's 32766 bind limits.
const INSERT_CHUNK: usize = 400;
/// Ids per `IN (...)` list.
const ID_CHUNK: usize = 400;
/// Most targets per multi-row UPDATE of [`Store::transition_targets`] (6 parameters each).
///
/// Kept small on purpose: SQLite looks up `$n` parameters by name in a linear list, when it
/// parses a statement and again (through sqlx) each time it binds one, so binding a statement
/// costs time quadratic in its parameter count. Around 200 parameters a statement balances that
/// against the cost of one statement per target; at 1,400 the lookups cost more than the
/// writes. See [`chunks`], which also keeps the number of distinct statement texts small so
/// that they stay prepared.
const STEP_CHUNK: usize = 32;
/// Most targets per multi-row UPDATE of [`Store::record_outcomes`] (14 parameters each); see
/// [`STEP_CHUNK`].
const OUTCOME_CHUNK: usize = 16;
/// Column types of one row of [`Store::transition_targets`]'s VALUES: job, agent, rank (of
/// `to`), at, dispatched_at, acked_at.
const STEP_COLS: &[&str] = &["TEXT", "TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT"];
/// Column types of one row of [`Store::record_outcomes`]'s VALUES, in the order it binds them.
const OUTCOME_COLS: &[&str] = &[
    "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "BIGINT", "BIGINT", "TEXT", "TEXT", "BIGINT",
    "BIGINT", "BIGINT", "BIGINT",
];
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

/// A row's current state as the rank of [`rank`] (terminal states above every step), so a step
/// applies when this is below the step's rank; kept equal to [`rank`] by a test.
const RANK_SQL: &str = "(CASE job_targets.state WHEN 'queued' THEN 0 WHEN 'dispatched' THEN 1 \
                        WHEN 'acked' THEN 2 WHEN 'running' THEN 3 ELSE 4 END)";

/// The step a VALUES row of [`Store::transition_targets`] names, from its rank (`v.v_rank`);
/// kept equal to [`rank`] by a test.
const STEP_STATE_SQL: &str =
    "(CASE v.v_rank WHEN 1 THEN 'dispatched' WHEN 2 THEN 'acked' ELSE 'running' END)";

/// Order of the states a target moves through; every terminal state ranks above the steps.
fn rank(state: TargetState) -> u8 {
    match state {
        TargetState::Queued => 0,
        TargetState::Dispatched => 1,
        TargetState::Acked => 2,
        TargetState::Running => 3,
        _ => 4,
    }
}

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
    /// When this step stands for several (a caller that saw dispatched, acked and running
    /// between two writes sends only the last): the time of the dispatch, for a step to
    /// `Acked` or `Running`. Written only if the target has no `dispatched_at` yet.
    pub dispatched_at: Option<i64>,
    /// Likewise the time of the ack, for a step to `Running`. Written only if the target has no
    /// `acked_at` yet.
    pub acked_at: Option<i64>,
}

impl TargetTransition {
    /// A single step, standing for no earlier one.
    pub fn new(job_id: Uuid, agent_id: Uuid, to: TargetState, at_ms: i64) -> Self {
        Self {
            job_id,
            agent_id,
            to,
            at_ms,
            dispatched_at: None,
            acked_at: None,
        }
    }
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
    /// Kept only if the target has no `dispatched_at` yet (a caller that never wrote the
    /// dispatch step separately passes its time here).
    pub dispatched_at: Option<i64>,
    /// Kept only if the target has no `acked_at` yet.
    pub acked_at: Option<i64>,
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

/// Splits positions that are in lock order (so rows of one target are adjacent, in input order)
/// into rounds that name each target at most once: round `r` holds the `r`-th row of every
/// target, still in lock order. One multi-row UPDATE cannot apply two rows to the same target
/// one after the other; consecutive rounds can.
fn rounds(order: &[usize], key: impl Fn(usize) -> Option<(Uuid, Uuid)>) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut prev = None;
    let mut run = 0;
    for &i in order {
        let k = key(i);
        run = if prev.is_some() && k == prev {
            run + 1
        } else {
            0
        };
        prev = k;
        if rounds.len() <= run {
            rounds.push(Vec::new());
        }
        if let Some(round) = rounds.get_mut(run) {
            round.push(i);
        }
    }
    rounds
}

/// `items` in pieces of `max`, then the rest in pieces whose sizes are powers of two (e.g. 45
/// with `max` 32: 32, 8, 4, 1). Multi-row statements are built per piece, so there are only a
/// handful of distinct statement texts, which sqlx keeps prepared; a piece of every possible
/// size would prepare a new statement for most batches.
fn chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let max = max.max(1);
    let mut out = Vec::with_capacity(items.len() / max + 8);
    let mut rest = items;
    while !rest.is_empty() {
        let n = if rest.len() >= max {
            max
        } else {
            1 << rest.len().ilog2()
        };
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}

/// The (job, agent) pairs a `RETURNING job_id, agent_id` produced.
fn returned_targets(rows: Vec<AnyRow>) -> Result<HashSet<(Uuid, Uuid)>> {
    rows.iter()
        .map(|row| Ok((get_uuid(row, "job_id")?, get_uuid(row, "agent_id")?)))
        .collect()
}

/// Marks the positions of `chunk` (which names each target at most once) whose target the
/// statement changed.
fn mark_applied(
    applied: &mut [bool],
    chunk: &[usize],
    done: &HashSet<(Uuid, Uuid)>,
    key: impl Fn(usize) -> Option<(Uuid, Uuid)>,
) {
    for &i in chunk {
        if let (Some(k), Some(slot)) = (key(i), applied.get_mut(i)) {
            *slot = done.contains(&k);
        }
    }
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

    /// Applies non-terminal steps in one write transaction. Each step is guarded and only moves
    /// forward: to `Dispatched` from queued (sets `dispatched_at`); to `Acked` from queued or
    /// dispatched (sets `acked_at`, and `dispatched_at` if unset); to `Running` from queued,
    /// dispatched or acked (sets `started_at`, and `dispatched_at` if unset, so the timeout
    /// still applies). A step may carry the times of earlier steps it stands for
    /// ([`TargetTransition::dispatched_at`], [`TargetTransition::acked_at`]); those are written
    /// only where the row has none yet, and `dispatched_at` falls back to `at_ms`. `updated_at`
    /// becomes `at_ms`. Returns, per input row, whether it applied; rows naming the same target
    /// apply in input order, as if one after the other. `Invalid` (and nothing written) if any
    /// row's `to` is `Queued` or terminal, or it carries the time of a step not before `to`.
    ///
    /// Rows are written with multi-row UPDATEs of up to 32 targets each.
    pub async fn transition_targets(&self, batch: &[TargetTransition]) -> Result<Vec<bool>> {
        for t in batch {
            if t.to.is_terminal() || t.to == TargetState::Queued {
                return Err(StoreError::Invalid(format!(
                    "cannot transition a target to {}: only dispatched, acked and running are \
                     steps",
                    t.to
                )));
            }
            if (t.dispatched_at.is_some() && t.to == TargetState::Dispatched)
                || (t.acked_at.is_some() && t.to != TargetState::Running)
            {
                return Err(StoreError::Invalid(format!(
                    "a step to {} cannot carry the time of a step that is not before it",
                    t.to
                )));
            }
        }
        let mut applied = vec![false; batch.len()];
        if batch.is_empty() {
            return Ok(applied);
        }
        let mut tx = self.begin_write().await?;
        let order = lock_order(batch, |t| (t.job_id, t.agent_id));
        for (round, positions) in rounds(&order, |i| batch.get(i).map(|t| (t.job_id, t.agent_id)))
            .iter()
            .enumerate()
        {
            for chunk in chunks(positions, STEP_CHUNK) {
                let rows: Vec<&TargetTransition> =
                    chunk.iter().filter_map(|&i| batch.get(i)).collect();
                if round == 0 {
                    self.lock_target_rows(&mut tx, rows.iter().map(|t| (t.job_id, t.agent_id)))
                        .await?;
                }
                let sql = format!(
                    "WITH v (v_job, v_agent, v_rank, v_at, v_dispatched, v_acked) AS \
                     (VALUES {}) \
                     UPDATE job_targets SET state = {STEP_STATE_SQL}, \
                     dispatched_at = CASE WHEN v.v_rank = 1 THEN v.v_at \
                         ELSE COALESCE(job_targets.dispatched_at, v.v_dispatched, v.v_at) END, \
                     acked_at = CASE WHEN v.v_rank = 2 THEN v.v_at \
                         ELSE COALESCE(job_targets.acked_at, v.v_acked) END, \
                     started_at = CASE WHEN v.v_rank = 3 THEN v.v_at \
                         ELSE job_targets.started_at END, \
                     updated_at = v.v_at \
                     FROM v \
                     WHERE job_targets.job_id = v.v_job AND job_targets.agent_id = v.v_agent \
                       AND {RANK_SQL} < v.v_rank \
                     RETURNING job_id, agent_id",
                    values_rows(1, rows.len(), STEP_COLS)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for t in &rows {
                    query = query
                        .bind(uuid_text(t.job_id))
                        .bind(uuid_text(t.agent_id))
                        .bind(i64::from(rank(t.to)))
                        .bind(t.at_ms)
                        .bind(t.dispatched_at)
                        .bind(t.acked_at);
                }
                let done = returned_targets(query.fetch_all(&mut *tx).await?)?;
                mark_applied(&mut applied, chunk, &done, |i| {
                    batch.get(i).map(|t| (t.job_id, t.agent_id))
                });
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Stores final results in one write transaction. Each row only applies to a target that is
    /// not yet terminal; returns, per input row, whether it applied (`false`: already terminal
    /// or unknown, so the caller still acknowledges the agent but must not count it; of rows
    /// naming the same target, at most the first applies). Sets the state, exit code, output
    /// and flags, data, error, `dispatched_at`, `acked_at` and `started_at` where unset,
    /// `finished_at`, and `updated_at` = `now_ms`. NUL characters in the texts are replaced by
    /// U+FFFD. `Invalid` (and nothing written) if any row's state is not terminal.
    ///
    /// Rows are written with multi-row UPDATEs of up to 16 targets each.
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
        let order = lock_order(batch, |o| (o.job_id, o.agent_id));
        // A terminal state never changes, so of the rows naming one target only the first can
        // apply: the later ones are not written at all.
        let firsts = rounds(&order, |i| batch.get(i).map(|o| (o.job_id, o.agent_id)))
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut tx = self.begin_write().await?;
        for chunk in chunks(&firsts, OUTCOME_CHUNK) {
            let rows: Vec<&TargetOutcome> = chunk.iter().filter_map(|&i| batch.get(i)).collect();
            self.lock_target_rows(&mut tx, rows.iter().map(|o| (o.job_id, o.agent_id)))
                .await?;
            // $1 is `now_ms`, shared by every row.
            let sql = format!(
                "WITH v (v_job, v_agent, v_state, v_exit, v_stdout, v_stderr, v_stdout_tr, \
                         v_stderr_tr, v_data, v_error, v_dispatched, v_acked, v_started, \
                         v_finished) AS (VALUES {}) \
                 UPDATE job_targets SET state = v.v_state, exit_code = v.v_exit, \
                 stdout = v.v_stdout, stderr = v.v_stderr, stdout_truncated = v.v_stdout_tr, \
                 stderr_truncated = v.v_stderr_tr, data = v.v_data, error = v.v_error, \
                 dispatched_at = COALESCE(job_targets.dispatched_at, v.v_dispatched), \
                 acked_at = COALESCE(job_targets.acked_at, v.v_acked), \
                 started_at = COALESCE(job_targets.started_at, v.v_started), \
                 finished_at = v.v_finished, updated_at = $1 \
                 FROM v \
                 WHERE job_targets.job_id = v.v_job AND job_targets.agent_id = v.v_agent \
                   AND job_targets.state NOT IN {TERMINAL_SQL} \
                 RETURNING job_id, agent_id",
                values_rows(2, rows.len(), OUTCOME_COLS)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms);
            for o in &rows {
                query = query
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
                    .bind(o.dispatched_at)
                    .bind(o.acked_at)
                    .bind(o.started_at)
                    .bind(o.finished_at);
            }
            let done = returned_targets(query.fetch_all(&mut *tx).await?)?;
            mark_applied(&mut applied, chunk, &done, |i| {
                batch.get(i).map(|o| (o.job_id, o.agent_id))
            });
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// On PostgreSQL, locks the given target rows in (job, agent) order before a multi-row
    /// UPDATE changes them: the UPDATE takes its row locks in whatever order its plan visits
    /// the rows, and two overlapping batches must not lock in opposite orders and deadlock.
    /// Called chunk by chunk in the same global order, so the locks of a whole batch are taken
    /// in that order. The text sorts as the bytes do (`COLLATE "C"`, lower-case hex), which is
    /// the order of `Uuid`. On SQLite the write lock taken at BEGIN already serialises writers.
    async fn lock_target_rows(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        targets: impl ExactSizeIterator<Item = (Uuid, Uuid)>,
    ) -> Result<()> {
        if self.backend() != Backend::Postgres || targets.len() == 0 {
            return Ok(());
        }
        let sql = format!(
            "SELECT 1 AS one FROM job_targets WHERE (job_id, agent_id) IN (VALUES {}) \
             ORDER BY job_id COLLATE \"C\", agent_id COLLATE \"C\" FOR UPDATE",
            values_rows(1, targets.len(), &["TEXT", "TEXT"])
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (job_id, agent_id) in targets {
            query = query.bind(uuid_text(job_id)).bind(uuid_text(agent_id));
        }
        query.fetch_all(&mut **tx).await?;
        Ok(())
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
    fn rank_sql_ranks_like_rank() {
        for state in TargetState::ALL {
            let want = format!("WHEN '{}' THEN {}", state.as_str(), rank(state));
            if state.is_terminal() {
                assert!(
                    !RANK_SQL.contains(&format!("'{}'", state.as_str())),
                    "{state}"
                );
                assert_eq!(rank(state), 4);
                assert!(RANK_SQL.contains("ELSE 4 END"));
            } else {
                assert!(RANK_SQL.contains(&want), "{state}: {RANK_SQL}");
            }
        }
    }

    #[test]
    fn rounds_name_each_target_once() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        // b, a, a, b, a, a: lock order is a(1), a(2), a(4), a(5), b(0), b(3).
        let batch = [(b, b), (a, a), (a, a), (b, b), (a, a), (a, a)];
        let order = lock_order(&batch, |&k| k);
        assert_eq!(order, vec![1, 2, 4, 5, 0, 3]);
        let key = |i: usize| batch.get(i).copied();
        assert_eq!(
            rounds(&order, key),
            vec![vec![1, 0], vec![2, 3], vec![4], vec![5]]
        );
        assert_eq!(rounds(&[], key), Vec::<Vec<usize>>::new());
        let distinct = [(a, a), (a, b), (b, a)];
        assert_eq!(
            rounds(&lock_order(&distinct, |&k| k), |i| distinct.get(i).copied()),
            vec![vec![0, 1, 2]]
        );
    }

    #[test]
    fn step_state_sql_names_the_step_of_each_rank() {
        for to in [
            TargetState::Dispatched,
            TargetState::Acked,
            TargetState::Running,
        ] {
            let arm = if to == TargetState::Running {
                format!("ELSE '{to}'")
            } else {
                format!("WHEN {} THEN '{to}'", rank(to))
            };
            assert!(STEP_STATE_SQL.contains(&arm), "{to}: {STEP_STATE_SQL}");
        }
    }

    #[test]
    fn chunks_are_full_then_powers_of_two() {
        let items: Vec<u32> = (0..77).collect();
        let sizes: Vec<usize> = chunks(&items, 32).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![32, 32, 8, 4, 1]);
        let joined: Vec<u32> = chunks(&items, 32).concat();
        assert_eq!(joined, items);
        assert!(chunks(&items[..0], 32).is_empty());
        assert_eq!(chunks(&items[..3], 1).len(), 3);
        let sizes: Vec<usize> = chunks(&items[..31], 32).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![16, 8, 4, 2, 1]);
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
