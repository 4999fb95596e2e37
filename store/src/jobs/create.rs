//! Creating a job with its targets and recording a cancel request: audited changes, so they
//! are [`Tx`] methods and the operation appends its audit record in the same transaction.

use std::collections::HashSet;

use uuid::Uuid;

use super::queries::fetch_job;
use super::records::{JOB_COLS, Job, NewJob, NewJobTarget, job_from_row};
use super::{name_ids, unique_ids};
use crate::Tx;
use crate::db::{to_json_text, uuid_text};
use crate::error::{Result, StoreError, map_constraint};

/// Target rows per multi-row INSERT: 4 parameters each (plus 3 shared), far below PostgreSQL's
/// 65535 and SQLite's 32766 bind limits.
const INSERT_CHUNK: usize = 400;

/// What a job row needs to be coherent: a type and its targets, each agent once. The limits of a
/// request (timeout, batch size, how many targets) are the job operation's to check; the
/// schema's CHECKs still refuse a timeout or batch size below 1.
fn validate_new_job(job: &NewJob, targets: &[NewJobTarget]) -> Result<()> {
    if job.job_type.trim().is_empty() {
        return Err(StoreError::Invalid("job_type is empty".into()));
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

impl Tx {
    /// Creates the job (status active, `total_targets` = number of targets) and one queued
    /// target per agent with its grant, signature and sealed secrets (if any), `queued_at` =
    /// `now_ms`, in this transaction. `Invalid` for an empty
    /// job type, no targets, an agent listed twice or an unknown organisation; `Conflict` if the
    /// job id is taken. The targets are not checked against the agents table: resolve them with
    /// [`Store::resolve_job_targets`](crate::Store::resolve_job_targets) first.
    pub async fn create_job(
        &mut self,
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
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| {
                map_constraint(e, "job id already exists", "organisation does not exist")
            })?;
        let stored = job_from_row(&row)?;

        for chunk in targets.chunks(INSERT_CHUNK) {
            // $1..$3 (job, org, now) are shared by every row; each row adds four parameters.
            let values = (0..chunk.len())
                .map(|i| {
                    let p = 4 + 4 * i;
                    format!(
                        "($1, ${p}, $2, 'queued', ${}, ${}, ${}, $3, $3)",
                        p + 1,
                        p + 2,
                        p + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO job_targets (job_id, agent_id, org_id, state, grant_hex, \
                 signature_hex, sealed_hex, queued_at, updated_at) VALUES {values}"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(job_id.clone())
                .bind(org_id.clone())
                .bind(now_ms);
            for target in chunk {
                query = query
                    .bind(uuid_text(target.agent_id))
                    .bind(&target.grant_hex)
                    .bind(&target.signature_hex)
                    .bind(target.sealed_hex.as_deref());
            }
            query
                .execute(&mut *self.conn())
                .await
                .map_err(|e| map_constraint(e, "agent targeted more than once", "job not found"))?;
        }
        Ok(stored)
    }

    /// Records a cancel request on a job of `org_id`: sets `cancel_requested_at` if the job is
    /// active and has none yet. Returns the job as it now is (`None` if it is not `org_id`'s).
    /// The status is unchanged; the job's actor finishes it.
    pub async fn request_job_cancel(
        &mut self,
        org_id: Uuid,
        job_id: Uuid,
        now_ms: i64,
    ) -> Result<Option<Job>> {
        sqlx::query(
            "UPDATE jobs SET cancel_requested_at = $3 \
             WHERE id = $1 AND org_id = $2 AND status = 'active' \
               AND cancel_requested_at IS NULL",
        )
        .bind(uuid_text(job_id))
        .bind(uuid_text(org_id))
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await?;
        fetch_job(&mut *self.conn(), Some(org_id), job_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ..NewJobTarget::default()
        };
        assert!(validate_new_job(&job, &[target(1), target(2)]).is_ok());
        assert!(validate_new_job(&job, &[]).is_err());
        assert!(validate_new_job(&job, &[target(1), target(1)]).is_err());
        let mut bad = job;
        bad.job_type = " ".into();
        assert!(validate_new_job(&bad, &[target(1)]).is_err());
    }
}
