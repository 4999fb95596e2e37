//! One target of a job: its state, deadline, grant, and whether its outcome is committed; how
//! an unwritten step merges into a later step or into the result; the outcomes the server
//! decides itself (expired, timed out, cancelled, refused) and those the agent reports.

use reap3r_store::{TargetOutcome, TargetState, TargetTransition, Uuid};
use reap3r_wire::{JobEnd, JobResult};

/// What one target's dispatch carries besides the job's spec, as stored at creation: its signed
/// grant and the secrets sealed to its agent (empty when it has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedTarget {
    pub grant: Vec<u8>,
    pub signature: Vec<u8>,
    /// Postcard `SealedEnv` bytes; the grant's `sealed_hash` is their BLAKE3.
    pub sealed: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Target {
    pub(super) state: TargetState,
    /// A result later than this (ms) is given up on: timed_out, or cancelled after a cancel.
    pub(super) deadline: Option<u64>,
    pub(super) signed: SignedTarget,
    /// Terminal, and that outcome is committed: a result arriving now is acked at once.
    pub(super) stored: bool,
    /// Results of the agent received since the outcome was decided, each owed a
    /// `JobResultAck` once the outcome commits.
    pub(super) acks_owed: u32,
    /// A dispatch of this queued target went out and its delivery is not answered yet (it
    /// holds a batch slot meanwhile).
    pub(super) offered: bool,
}

impl Target {
    pub(super) fn queued(signed: SignedTarget) -> Self {
        Self::loaded(TargetState::Queued, None, signed)
    }

    /// As read back from the database: a terminal state there is committed.
    pub(super) fn loaded(state: TargetState, deadline: Option<u64>, signed: SignedTarget) -> Self {
        Self {
            state,
            deadline: if state.is_terminal() { None } else { deadline },
            signed,
            stored: state.is_terminal(),
            acks_owed: 0,
            offered: false,
        }
    }
}

/// Order of the non-terminal states; a target only moves forward.
pub(super) fn rank(s: TargetState) -> u8 {
    match s {
        TargetState::Queued => 0,
        TargetState::Dispatched => 1,
        TargetState::Acked => 2,
        TargetState::Running => 3,
        _ => 4,
    }
}

/// `later` (a further step of the same target) standing for `earlier` too: it carries the
/// dispatch time and the ack time `earlier` would have written.
pub(super) fn supersede(
    earlier: TargetTransition,
    mut later: TargetTransition,
) -> TargetTransition {
    later.dispatched_at = Some(earlier.dispatched_at.unwrap_or(earlier.at_ms));
    later.acked_at = match earlier.to {
        TargetState::Acked => Some(earlier.at_ms),
        _ => earlier.acked_at,
    };
    later
}

/// Moves the times of an unwritten step into the result of the same target, which then writes
/// them where the row has none: the dispatch and ack times, and the start time reported by
/// `JobStarted` (which wins over the result's own, as it would had the step been written).
pub(super) fn fold_step(step: TargetTransition, outcome: &mut TargetOutcome) {
    let (dispatched, acked, started) = match step.to {
        TargetState::Dispatched => (Some(step.at_ms), None, None),
        TargetState::Acked => (
            step.dispatched_at.or(Some(step.at_ms)),
            Some(step.at_ms),
            None,
        ),
        _ => (
            step.dispatched_at.or(Some(step.at_ms)),
            step.acked_at,
            Some(step.at_ms),
        ),
    };
    outcome.dispatched_at = outcome.dispatched_at.or(dispatched);
    outcome.acked_at = outcome.acked_at.or(acked);
    outcome.started_at = started.or(outcome.started_at);
}

pub(super) fn server_outcome(
    job_id: Uuid,
    agent_id: Uuid,
    state: TargetState,
    error: String,
    now: u64,
) -> TargetOutcome {
    TargetOutcome {
        job_id,
        agent_id,
        state,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        data: None,
        error: Some(error),
        dispatched_at: None,
        acked_at: None,
        started_at: None,
        finished_at: now as i64,
    }
}

pub(crate) fn agent_outcome(job_id: Uuid, agent_id: Uuid, r: &JobResult) -> TargetOutcome {
    let state = match r.end {
        JobEnd::Succeeded => TargetState::Succeeded,
        JobEnd::Failed | JobEnd::Refused => TargetState::Failed,
        JobEnd::TimedOut => TargetState::TimedOut,
        JobEnd::Cancelled => TargetState::Cancelled,
    };
    let error = match (r.end, &r.error) {
        (JobEnd::Refused, Some(e)) => Some(format!("refused by agent: {e}")),
        (JobEnd::Refused, None) => Some("refused by agent".into()),
        (_, e) => e.clone(),
    };
    TargetOutcome {
        job_id,
        agent_id,
        state,
        exit_code: r.exit_code.map(i64::from),
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        data: r.data.clone(),
        error,
        dispatched_at: None,
        acked_at: None,
        started_at: (r.started_at_ms > 0).then_some(r.started_at_ms as i64),
        finished_at: r.finished_at_ms as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(to: TargetState, at: i64) -> TargetTransition {
        TargetTransition::new(Uuid::nil(), Uuid::nil(), to, at)
    }

    fn result(started_at: Option<i64>) -> TargetOutcome {
        let mut o = server_outcome(
            Uuid::nil(),
            Uuid::nil(),
            TargetState::Succeeded,
            "".into(),
            9,
        );
        o.started_at = started_at;
        o
    }

    #[test]
    fn a_later_step_carries_the_earlier_times() {
        use TargetState::*;
        let acked = supersede(step(Dispatched, 1), step(Acked, 2));
        assert_eq!((acked.to, acked.at_ms), (Acked, 2));
        assert_eq!((acked.dispatched_at, acked.acked_at), (Some(1), None));
        let running = supersede(acked, step(Running, 3));
        assert_eq!((running.to, running.at_ms), (Running, 3));
        assert_eq!(
            (running.dispatched_at, running.acked_at),
            (Some(1), Some(2))
        );
        // Dispatched in an earlier flush: the ack's time is the fallback, as in the store.
        let running = supersede(step(Acked, 5), step(Running, 6));
        assert_eq!(
            (running.dispatched_at, running.acked_at),
            (Some(5), Some(5))
        );
        let running = supersede(step(Dispatched, 7), step(Running, 8));
        assert_eq!((running.dispatched_at, running.acked_at), (Some(7), None));
    }

    #[test]
    fn a_result_takes_the_times_of_its_unwritten_step() {
        use TargetState::*;
        let mut o = result(Some(50));
        fold_step(step(Dispatched, 1), &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(1), None, Some(50))
        );

        let mut o = result(Some(50));
        fold_step(step(Acked, 2), &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(2), Some(2), Some(50))
        );

        // JobStarted's time wins over the result's own, as when the step was written first.
        let mut o = result(Some(50));
        let running = supersede(
            supersede(step(Dispatched, 1), step(Acked, 2)),
            step(Running, 3),
        );
        fold_step(running, &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(1), Some(2), Some(3))
        );

        let mut o = result(None);
        fold_step(step(Running, 4), &mut o);
        assert_eq!(
            (o.dispatched_at, o.acked_at, o.started_at),
            (Some(4), None, Some(4))
        );
    }
}
