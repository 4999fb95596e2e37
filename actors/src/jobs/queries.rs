//! Reading jobs: pages of an organisation's jobs (newest first, keyset cursor), one job with
//! its per-state counts, the per-agent results of a job, one agent's result, and the stats.
//! Everything is scoped to the caller's organisation.

use reap3r_store::{
    Job, JobFilter, JobStats, JobStatus, JobTarget, TargetCounts, TargetState, Uuid,
};
use reap3r_wire::JobType;

use crate::access::Caller;
use crate::domain::Domain;
use crate::error::{DomainError, DomainResult};

/// Largest page of jobs.
pub const MAX_JOB_LIST_PAGE: i64 = 200;
/// Largest page of results; below the store's cap so the extra row that tells whether another
/// page exists fits.
pub const MAX_JOB_RESULT_PAGE: i64 = 500;
/// Page size when the caller names none.
pub const DEFAULT_JOB_PAGE: i64 = 100;
/// Longest cursor a caller may send back (the ones handed out are shorter).
pub const MAX_JOB_CURSOR_CHARS: usize = 100;

/// The page size for `limit`, within 1..=`max`.
fn page_size(limit: Option<i64>, max: i64) -> DomainResult<i64> {
    match limit {
        None => Ok(DEFAULT_JOB_PAGE.min(max)),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(DomainError::invalid(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

fn encode_cursor(j: &Job) -> String {
    format!("{}_{}", j.created_at, j.id)
}

fn decode_cursor(s: &str) -> DomainResult<(i64, Uuid)> {
    let bad = || DomainError::invalid("cursor is not one this API returned");
    if s.chars().count() > MAX_JOB_CURSOR_CHARS {
        return Err(bad());
    }
    let (at, id) = s.split_once('_').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        Uuid::parse_str(id).map_err(|_| bad())?,
    ))
}

/// A job with how many of its targets are in each state.
#[derive(Debug, Clone)]
pub struct JobDetail {
    pub job: Job,
    pub counts: TargetCounts,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub items: Vec<Job>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// One page of a job's per-agent results, by agent id.
#[derive(Debug, Clone)]
pub struct JobResultPage {
    pub items: Vec<JobTarget>,
    /// Pass as `after` for the next page.
    pub next_cursor: Option<String>,
}

/// The organisation's jobs, newest first, optionally by status and type.
#[derive(Debug, Clone, Default)]
pub struct ListJobs {
    pub status: Option<JobStatus>,
    pub job_type: Option<JobType>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to [`MAX_JOB_LIST_PAGE`], default [`DEFAULT_JOB_PAGE`].
    pub limit: Option<i64>,
}

impl ListJobs {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<JobPage> {
        let limit = page_size(self.limit, MAX_JOB_LIST_PAGE)?;
        let filter = JobFilter {
            status: self.status,
            job_type: self.job_type.map(|t| t.as_str().to_owned()),
            created_by: None,
            before: self.cursor.as_deref().map(decode_cursor).transpose()?,
        };
        let mut jobs = domain
            .store
            .list_jobs(caller.org_id, &filter, limit + 1)
            .await?;
        let more = jobs.len() as i64 > limit;
        jobs.truncate(limit as usize);
        let next_cursor = more.then(|| jobs.last().map(encode_cursor)).flatten();
        Ok(JobPage {
            items: jobs,
            next_cursor,
        })
    }
}

/// The job, if it is the caller's organisation's; `NotFound` otherwise.
async fn job_in_org(domain: &Domain, caller: &Caller, id: Uuid) -> DomainResult<Job> {
    domain
        .store
        .job(Some(caller.org_id), id)
        .await?
        .ok_or(DomainError::NotFound("job"))
}

/// One job with its per-state target counts.
#[derive(Debug, Clone)]
pub struct GetJob {
    pub job_id: Uuid,
}

impl GetJob {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<JobDetail> {
        let job = job_in_org(domain, caller, self.job_id).await?;
        let counts = domain.store.job_target_counts(job.id).await?;
        Ok(JobDetail { job, counts })
    }
}

/// A job's per-agent results, by agent id, one page at a time.
#[derive(Debug, Clone)]
pub struct ListJobResults {
    pub job_id: Uuid,
    pub state: Option<TargetState>,
    /// `next_cursor` of the previous page.
    pub after: Option<Uuid>,
    /// 1 to [`MAX_JOB_RESULT_PAGE`], default [`DEFAULT_JOB_PAGE`].
    pub limit: Option<i64>,
}

impl ListJobResults {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<JobResultPage> {
        let limit = page_size(self.limit, MAX_JOB_RESULT_PAGE)?;
        let job = job_in_org(domain, caller, self.job_id).await?;
        let mut rows = domain
            .store
            .list_job_targets(caller.org_id, job.id, self.state, self.after, limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|r| r.agent_id.to_string()))
            .flatten();
        Ok(JobResultPage {
            items: rows,
            next_cursor,
        })
    }
}

/// One agent's result of a job.
#[derive(Debug, Clone)]
pub struct GetJobResult {
    pub job_id: Uuid,
    pub agent_id: Uuid,
}

impl GetJobResult {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<JobTarget> {
        domain
            .store
            .job_target(caller.org_id, self.job_id, self.agent_id)
            .await?
            .ok_or(DomainError::NotFound("job result"))
    }
}

/// The organisation's jobs by status and the targets of all its jobs by state.
#[derive(Debug, Clone, Default)]
pub struct GetJobStats;

impl GetJobStats {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<JobStats> {
        Ok(domain.store.job_stats(caller.org_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let id = Uuid::now_v7();
        let (at, back) = decode_cursor(&format!("123_{id}")).unwrap();
        assert_eq!((at, back), (123, id));
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor(&"1".repeat(MAX_JOB_CURSOR_CHARS + 1)).is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(
            page_size(None, MAX_JOB_LIST_PAGE).unwrap(),
            DEFAULT_JOB_PAGE
        );
        assert_eq!(page_size(Some(7), 10).unwrap(), 7);
        assert!(page_size(Some(0), 10).is_err());
        assert!(page_size(Some(11), 10).is_err());
    }
}
