//! Outcomes: recorded exactly once, concurrently, in large mixed batches and overlapping multi-statement batches.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_are_recorded_exactly_once() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 4, T0).await?;
        use TargetState::*;
        store
            .transition_targets(&[
                step(&job, a[0], Dispatched, T0 + 1),
                step(&job, a[0], Running, T0 + 2),
            ])
            .await?;

        let first = outcome(&job, a[0], Succeeded, T0 + 100);
        check(
            b,
            "first outcome",
            store
                .record_outcomes(std::slice::from_ref(&first), T0 + 101)
                .await?,
            vec![true],
        );
        let stored = target(&store, &job, a[0]).await?;
        check(
            b,
            "stored result",
            (
                stored.state,
                stored.exit_code,
                stored.stdout.clone(),
                stored.stderr.clone(),
                stored.stdout_truncated,
                stored.stderr_truncated,
                stored.data.clone(),
                stored.error.clone(),
                stored.dispatched_at,
                stored.started_at,
                stored.finished_at,
                stored.updated_at,
            ),
            (
                Succeeded,
                Some(0),
                first.stdout.clone(),
                "warn\n".to_owned(),
                true,
                false,
                Some(r#"{"k":1}"#.to_owned()),
                None,
                Some(T0 + 1),
                // started_at from JobStarted wins over the outcome's.
                Some(T0 + 2),
                Some(T0 + 100),
                T0 + 101,
            ),
        );
        check(
            b,
            "the same outcome again",
            store
                .record_outcomes(std::slice::from_ref(&first), T0 + 200)
                .await?,
            vec![false],
        );
        check(
            b,
            "a different outcome",
            store
                .record_outcomes(&[outcome(&job, a[0], Failed, T0 + 300)], T0 + 300)
                .await?,
            vec![false],
        );
        check(
            b,
            "nothing changed",
            target(&store, &job, a[0]).await?,
            stored,
        );

        // Straight from queued: started_at comes from the outcome; NUL cannot break PostgreSQL.
        let mut odd = outcome(&job, a[1], Failed, T0 + 400);
        odd.stdout = "a\0b".into();
        odd.error = Some("refused\0".into());
        odd.exit_code = None;
        check(
            b,
            "server-side duplicate in one batch, unknown target",
            store
                .record_outcomes(
                    &[
                        odd.clone(),
                        outcome(&job, a[1], Expired, T0 + 401),
                        outcome(&job, Uuid::new_v4(), Failed, T0 + 400),
                    ],
                    T0 + 402,
                )
                .await?,
            vec![true, false, false],
        );
        let t1 = target(&store, &job, a[1]).await?;
        check(
            b,
            "nul replaced, started_at from the outcome",
            (t1.state, t1.stdout, t1.error, t1.exit_code, t1.started_at),
            (
                Failed,
                "a\u{FFFD}b".to_owned(),
                Some("refused\u{FFFD}".to_owned()),
                None,
                Some(T0 + 390),
            ),
        );

        for state in [Queued, Dispatched, Acked, Running] {
            check(
                b,
                &format!("refuse {state}"),
                kind(
                    store
                        .record_outcomes(
                            &[
                                outcome(&job, a[2], Succeeded, T0 + 500),
                                outcome(&job, a[2], state, T0 + 500),
                            ],
                            T0 + 500,
                        )
                        .await,
                ),
                "invalid",
            );
        }
        check(
            b,
            "refused batch wrote nothing",
            target(&store, &job, a[2]).await?.state,
            Queued,
        );
        check(
            b,
            "empty batch",
            store.record_outcomes(&[], T0).await?,
            vec![],
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_outcomes_apply_once() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 40, T0).await?;

        // Two tasks record the same target at the same moment, for each of 20 targets.
        let mut tasks = Vec::new();
        for (i, agent) in a[..20].iter().enumerate() {
            for attempt in 0..2 {
                let store = store.clone();
                let o = outcome(&job, *agent, TargetState::Succeeded, T0 + 1_000 + attempt);
                tasks.push((
                    i,
                    tokio::spawn(async move { store.record_outcomes(&[o], T0 + 2_000).await }),
                ));
            }
        }
        let mut wins = vec![0; 20];
        for (i, task) in tasks {
            if task.await??[0] {
                wins[i] += 1;
            }
        }
        check(b, "exactly one win per target", wins, vec![1; 20]);

        // Two overlapping batches in opposite orders: no deadlock, each target applied once.
        let forward: Vec<TargetOutcome> = a[20..]
            .iter()
            .map(|x| outcome(&job, *x, TargetState::Failed, T0 + 3_000))
            .collect();
        let backward: Vec<TargetOutcome> = forward.iter().rev().cloned().collect();
        let (s1, s2) = (store.clone(), store.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { s1.record_outcomes(&forward, T0 + 3_001).await }),
            tokio::spawn(async move { s2.record_outcomes(&backward, T0 + 3_001).await }),
        );
        let (r1, mut r2) = (r1??, r2??);
        r2.reverse();
        let applied: Vec<u32> = r1
            .iter()
            .zip(&r2)
            .map(|(x, y)| u32::from(*x) + u32::from(*y))
            .collect();
        check(b, "overlapping batches: once each", applied, vec![1; 20]);
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(TargetState::Succeeded, 20), (TargetState::Failed, 20)]),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_mixed_outcome_batches_apply_once() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 300, T0).await?;
        // 40 finished, 80 running, the rest queued.
        let finished: Vec<TargetOutcome> = a[..40]
            .iter()
            .map(|x| outcome(&job, *x, Failed, T0 + 2))
            .collect();
        store.record_outcomes(&finished, T0 + 2).await?;
        let running: Vec<TargetTransition> = a[40..120]
            .iter()
            .map(|x| {
                let mut t = step(&job, *x, Running, T0 + 4);
                t.dispatched_at = Some(T0 + 3);
                t
            })
            .collect();
        store.transition_targets(&running).await?;
        let before = rows_of(&store, &job).await?;
        let finished_before = target(&store, &job, a[0]).await?;

        // Every target, backwards; then 30 repeats with another state; 10 unknown targets:
        // 340 rows, many statements (16 outcomes each, the last ones smaller).
        let mut batch: Vec<TargetOutcome> = a
            .iter()
            .rev()
            .enumerate()
            .map(|(n, x)| {
                let mut o = outcome(&job, *x, Succeeded, T0 + 100 + n as i64);
                o.dispatched_at = Some(T0 + 50);
                o.acked_at = Some(T0 + 60);
                o.started_at = Some(T0 + 70);
                o
            })
            .collect();
        if let Some(o) = batch.get_mut(250) {
            o.stdout = "nul \0 in a later chunk".into();
        }
        for x in a.iter().step_by(10) {
            batch.push(outcome(&job, *x, TimedOut, T0 + 500));
        }
        for x in random_agents(10) {
            batch.push(outcome(&job, x, Failed, T0 + 600));
        }
        let mut seen = std::collections::HashSet::new();
        let want: Vec<bool> = batch
            .iter()
            .map(|o| {
                seen.insert(o.agent_id)
                    && before
                        .get(&o.agent_id)
                        .is_some_and(|r| !r.state.is_terminal())
            })
            .collect();
        check(b, "rows applied", want.iter().filter(|w| **w).count(), 260);
        check(
            b,
            "first of each open target applies",
            store.record_outcomes(&batch, T0 + 1_000).await?,
            want,
        );
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(Failed, 40), (Succeeded, 260)]),
        );
        check(
            b,
            "finished target untouched",
            target(&store, &job, a[0]).await?,
            finished_before,
        );
        let after = rows_of(&store, &job).await?;
        let run = after.get(&a[50]).copied();
        check(
            b,
            "running target keeps its stamps",
            run.map(|r| {
                (
                    r.state,
                    r.dispatched_at,
                    r.acked_at,
                    r.started_at,
                    r.updated_at,
                )
            }),
            Some((
                Succeeded,
                Some(T0 + 3),
                Some(T0 + 60),
                Some(T0 + 4),
                T0 + 1_000,
            )),
        );
        let queued = after.get(&a[299]).copied();
        check(
            b,
            "queued target takes the carried stamps",
            queued.map(|r| (r.state, r.dispatched_at, r.acked_at, r.started_at)),
            Some((Succeeded, Some(T0 + 50), Some(T0 + 60), Some(T0 + 70))),
        );
        let odd = target(&store, &job, a[299 - 250]).await?;
        check(
            b,
            "nul replaced in a later statement",
            (odd.stdout, odd.exit_code, odd.finished_at),
            (
                "nul \u{FFFD} in a later chunk".to_owned(),
                Some(0),
                Some(T0 + 350),
            ),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_multi_statement_batches_apply_once() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 900, T0).await?;
        let (steps, results) = a.split_at(450);

        // Two writers, each with every target of its half (several statements), in opposite
        // orders, at once, three times over: no deadlock, every target applied exactly once.
        for round in 0..3i64 {
            let to = [Dispatched, Acked, Running][round as usize];
            let forward: Vec<TargetTransition> = steps
                .iter()
                .map(|x| step(&job, *x, to, T0 + 10 + round))
                .collect();
            let backward: Vec<TargetTransition> = forward.iter().rev().copied().collect();
            let (s1, s2) = (store.clone(), store.clone());
            let (r1, r2) = tokio::join!(
                tokio::spawn(async move { s1.transition_targets(&forward).await }),
                tokio::spawn(async move { s2.transition_targets(&backward).await }),
            );
            let (r1, mut r2) = (r1??, r2??);
            r2.reverse();
            let once: Vec<u32> = r1
                .iter()
                .zip(&r2)
                .map(|(x, y)| u32::from(*x) + u32::from(*y))
                .collect();
            check(b, &format!("steps to {to}: once each"), once, vec![1; 450]);
        }

        let forward: Vec<TargetOutcome> = results
            .iter()
            .map(|x| outcome(&job, *x, Succeeded, T0 + 100))
            .collect();
        let backward: Vec<TargetOutcome> = forward.iter().rev().cloned().collect();
        let (s1, s2) = (store.clone(), store.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { s1.record_outcomes(&forward, T0 + 101).await }),
            tokio::spawn(async move { s2.record_outcomes(&backward, T0 + 101).await }),
        );
        let (r1, mut r2) = (r1??, r2??);
        r2.reverse();
        let once: Vec<u32> = r1
            .iter()
            .zip(&r2)
            .map(|(x, y)| u32::from(*x) + u32::from(*y))
            .collect();
        check(b, "outcomes: once each", once, vec![1; 450]);
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(Running, 450), (Succeeded, 450)]),
        );
        store.close().await;
    }
    Ok(())
}
