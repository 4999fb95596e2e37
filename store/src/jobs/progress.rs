//! The job engine's progress writes: the guarded, multi-row target steps and outcomes that make
//! results exactly-once, and finishing a job. Not audited (system writes), so they stay on
//! [`Store`] and take their own transaction.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use uuid::Uuid;

use super::records::{JobStatus, TargetOutcome, TargetState, TargetTransition};
use crate::db::{bool_int, get_uuid, uuid_text, values_rows};
use crate::error::{Result, StoreError};
use crate::{Backend, Store};

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

/// PostgreSQL cannot store NUL in TEXT; agent output may contain it. Replacing it (on both
/// backends, so they agree) keeps one odd byte from making a whole result batch unstorable.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
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

impl Store {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
