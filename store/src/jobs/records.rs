//! The job records: jobs, their targets and the states they move through, the inputs of the
//! writes (new jobs, steps, outcomes), the target selector and the filters and counts of reads;
//! with how rows become records.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_bool, get_i64, get_json, get_opt_i64, get_opt_str, get_str, get_uuid};
use crate::error::{Result, StoreError};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJobTarget {
    pub agent_id: Uuid,
    pub grant_hex: String,
    pub signature_hex: String,
    /// Hex of the secrets sealed to this agent (postcard `SealedEnv`), whose BLAKE3 the grant
    /// carries as `sealed_hash`; `None` when the job has none for it.
    #[serde(default)]
    pub sealed_hex: Option<String>,
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
    /// The target's sealed secrets (hex), sent with every dispatch of it.
    pub sealed_hex: Option<String>,
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

pub(super) const JOB_COLS: &str = "id, org_id, job_type, payload, spec, targets, created_by, created_at, \
                        timeout_s, expires_at, batch_size, status, cancel_requested_at, \
                        finished_at, total_targets";

pub(super) const TARGET_COLS: &str = "job_id, agent_id, org_id, state, grant_hex, signature_hex, queued_at, \
                           dispatched_at, acked_at, started_at, finished_at, exit_code, stdout, \
                           stderr, stdout_truncated, stderr_truncated, data, error, updated_at";

pub(super) fn job_from_row(row: &AnyRow) -> Result<Job> {
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

pub(super) fn target_from_row(row: &AnyRow) -> Result<JobTarget> {
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

pub(super) fn counts_from_rows(rows: &[AnyRow]) -> Result<TargetCounts> {
    let mut counts = TargetCounts::default();
    for row in rows {
        let state: TargetState = get_str(row, "state")?.parse()?;
        *counts.slot(state) += get_i64(row, "n")?;
    }
    Ok(counts)
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
}
