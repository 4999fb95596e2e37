//! Jobs: one `jobs` row per request and one `job_targets` row per (job, agent), with the guarded
//! writes that make results exactly-once. A target's state only moves forward and never leaves a
//! terminal state: every UPDATE here carries that guard in its WHERE clause, so a late, replayed
//! or concurrent write simply matches no row. See docs/JOBS.md for the lifecycle.
//!
//! - [`records`]: the records, states, inputs and filters;
//! - [`create`]: creating a job and recording a cancel request ([`Tx`](crate::Tx) methods);
//! - [`progress`]: the job engine's steps, outcomes and finishing (on [`Store`](crate::Store));
//! - [`queries`]: reads and pages;
//! - [`targets`]: resolving a selector to the agents that may run the job.

mod create;
mod progress;
mod queries;
mod records;
mod targets;

use std::collections::HashSet;

use uuid::Uuid;

pub use records::{
    Job, JobFilter, JobStats, JobStatus, JobTarget, JobTargetGrant, JobTargetSelector, NewJob,
    NewJobTarget, TargetCounts, TargetOutcome, TargetState, TargetTransition,
};

/// Most jobs [`Store::list_jobs`](crate::Store::list_jobs) returns in one call.
pub const MAX_JOB_PAGE: i64 = 1_000;
/// Most targets [`Store::list_job_targets`](crate::Store::list_job_targets) returns in one call.
pub const MAX_JOB_TARGET_PAGE: i64 = 1_000;
/// How many offending ids an error message names.
const MAX_NAMED_IDS: usize = 5;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_named_up_to_five() {
        let ids: Vec<Uuid> = (0..7u128).map(Uuid::from_u128).collect();
        let text = name_ids(&ids);
        assert!(text.ends_with(" and 2 more"), "{text}");
        assert_eq!(text.matches(", ").count(), 4);
        assert_eq!(name_ids(&ids[..1]), ids[0].to_string());
    }
}
