//! Reading jobs and their targets: one job, pages of jobs and of targets, what a job actor
//! loads, per-state counts and an organisation's stats.

use uuid::Uuid;

use super::records::{
    JOB_COLS, Job, JobFilter, JobStats, JobStatus, JobTarget, JobTargetGrant, TARGET_COLS,
    TargetCounts, TargetState, counts_from_rows, job_from_row, target_from_row,
};
use super::{MAX_JOB_PAGE, MAX_JOB_TARGET_PAGE};
use crate::Store;
use crate::db::{Conditions, get_i64, get_opt_i64, get_opt_str, get_str, get_uuid, uuid_text};
use crate::error::Result;

/// The job, if it is `org_id`'s (any organisation's when `None`); on the pool or inside a
/// transaction.
pub(super) async fn fetch_job<'e, E>(
    executor: E,
    org_id: Option<Uuid>,
    id: Uuid,
) -> Result<Option<Job>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
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
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

impl Store {
    /// The job; in any organisation when `org_id` is `None` (for the job actors).
    pub async fn job(&self, org_id: Option<Uuid>, id: Uuid) -> Result<Option<Job>> {
        fetch_job(self.pool(), org_id, id).await
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

    /// Each target of a job with its state, dispatch time, signed grant and sealed secrets, by
    /// agent id, without the output columns: what a job actor needs to (re)load and dispatch.
    pub async fn job_target_grants(&self, job_id: Uuid) -> Result<Vec<JobTargetGrant>> {
        let rows = sqlx::query(
            "SELECT agent_id, state, dispatched_at, grant_hex, signature_hex, sealed_hex \
             FROM job_targets WHERE job_id = $1 ORDER BY agent_id",
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
                    sealed_hex: get_opt_str(row, "sealed_hex")?,
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
}
