//! The guarded target steps: only forward, row by row in large mixed batches, and the times a step carries.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transitions_only_move_forward() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 6, T0).await?;
        use TargetState::*;

        check(
            b,
            "queued -> dispatched",
            store
                .transition_targets(&[step(&job, a[0], Dispatched, T0 + 10)])
                .await?,
            vec![true],
        );
        check(
            b,
            "dispatched again, acked, dispatched (backwards), running, acked (backwards)",
            store
                .transition_targets(&[
                    step(&job, a[0], Dispatched, T0 + 11),
                    step(&job, a[0], Acked, T0 + 12),
                    step(&job, a[0], Dispatched, T0 + 13),
                    step(&job, a[0], Running, T0 + 14),
                    step(&job, a[0], Acked, T0 + 15),
                ])
                .await?,
            vec![false, true, false, true, false],
        );
        let t = target(&store, &job, a[0]).await?;
        check(
            b,
            "stamps of a full walk",
            (
                t.state,
                t.dispatched_at,
                t.acked_at,
                t.started_at,
                t.updated_at,
            ),
            (
                Running,
                Some(T0 + 10),
                Some(T0 + 12),
                Some(T0 + 14),
                T0 + 14,
            ),
        );

        // Skipping steps fills dispatched_at, so the timeout still applies.
        check(
            b,
            "queued -> acked, queued -> running",
            store
                .transition_targets(&[
                    step(&job, a[1], Acked, T0 + 20),
                    step(&job, a[2], Running, T0 + 21),
                ])
                .await?,
            vec![true, true],
        );
        let t1 = target(&store, &job, a[1]).await?;
        check(
            b,
            "acked from queued",
            (t1.state, t1.dispatched_at, t1.acked_at, t1.started_at),
            (Acked, Some(T0 + 20), Some(T0 + 20), None),
        );
        let t2 = target(&store, &job, a[2]).await?;
        check(
            b,
            "running from queued",
            (t2.state, t2.dispatched_at, t2.acked_at, t2.started_at),
            (Running, Some(T0 + 21), None, Some(T0 + 21)),
        );

        // Terminal targets never move again.
        check(
            b,
            "finish a[3]",
            store
                .record_outcomes(&[outcome(&job, a[3], Succeeded, T0 + 30)], T0 + 30)
                .await?,
            vec![true],
        );
        let before = target(&store, &job, a[3]).await?;
        check(
            b,
            "out of terminal",
            store
                .transition_targets(&[
                    step(&job, a[3], Dispatched, T0 + 31),
                    step(&job, a[3], Acked, T0 + 31),
                    step(&job, a[3], Running, T0 + 31),
                ])
                .await?,
            vec![false, false, false],
        );
        check(
            b,
            "terminal unchanged",
            target(&store, &job, a[3]).await?,
            before,
        );

        check(
            b,
            "duplicates in one batch: the first applies",
            store
                .transition_targets(&[
                    step(&job, a[4], Dispatched, T0 + 40),
                    step(&job, a[4], Dispatched, T0 + 41),
                ])
                .await?,
            vec![true, false],
        );
        check(
            b,
            "dispatched_at of the first",
            target(&store, &job, a[4]).await?.dispatched_at,
            Some(T0 + 40),
        );
        check(
            b,
            "unknown target",
            store
                .transition_targets(&[step(&job, Uuid::new_v4(), Dispatched, T0 + 50)])
                .await?,
            vec![false],
        );
        check(
            b,
            "empty batch",
            store.transition_targets(&[]).await?,
            vec![],
        );

        // Terminal or queued destinations are refused, and nothing in the batch is written.
        for to in [Queued, Succeeded, Failed, TimedOut, Cancelled, Expired] {
            check(
                b,
                &format!("refuse {to}"),
                kind(
                    store
                        .transition_targets(&[
                            step(&job, a[5], Dispatched, T0 + 60),
                            step(&job, a[5], to, T0 + 60),
                        ])
                        .await,
                ),
                "invalid",
            );
        }
        check(
            b,
            "refused batch wrote nothing",
            target(&store, &job, a[5]).await?.state,
            Queued,
        );

        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[
                (Queued, 1),
                (Dispatched, 1),
                (Acked, 1),
                (Running, 2),
                (Succeeded, 1),
            ]),
        );
        check(
            b,
            "states for the actor",
            store
                .job_target_states(job.id)
                .await?
                .into_iter()
                .map(|(_, s, d)| (s, d))
                .collect::<Vec<_>>(),
            vec![
                (Running, Some(T0 + 10)),
                (Acked, Some(T0 + 20)),
                (Running, Some(T0 + 21)),
                (Succeeded, None),
                (Dispatched, Some(T0 + 40)),
                (Queued, None),
            ],
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_mixed_transition_batches_apply_row_by_row() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        // Many more targets than one multi-row statement takes (32 steps, 16 outcomes), with
        // some already finished and some already dispatched.
        let (job, a) = job_with(&store, org.id, 450, T0).await?;
        let finished: Vec<TargetOutcome> = a[..150]
            .iter()
            .map(|x| outcome(&job, *x, Succeeded, T0 + 2))
            .collect();
        check(
            b,
            "setup: finish 150",
            store.record_outcomes(&finished, T0 + 2).await?,
            vec![true; 150],
        );
        let dispatched: Vec<TargetTransition> = a[150..250]
            .iter()
            .map(|x| step(&job, *x, Dispatched, T0 + 5))
            .collect();
        check(
            b,
            "setup: dispatch 100",
            store.transition_targets(&dispatched).await?,
            vec![true; 100],
        );
        let mut model: std::collections::HashMap<Uuid, Option<Row>> = rows_of(&store, &job)
            .await?
            .into_iter()
            .map(|(agent, row)| (agent, Some(row)))
            .collect();
        let unknown = random_agents(20);

        // 1,500 rows in random order: every step kind, repeats of a target (up to several per
        // batch, forwards and backwards), carried stamps, unknown targets.
        let mut rng = Lcg(0x5eed);
        let mut batch = Vec::new();
        for n in 0..1_500i64 {
            let agent = if rng.below(25) == 0 {
                unknown[rng.below(unknown.len())]
            } else {
                a[rng.below(a.len())]
            };
            let to = [Dispatched, Acked, Running][rng.below(3)];
            let mut t = step(&job, agent, to, T0 + 100 + n);
            if to != Dispatched && rng.below(2) == 0 {
                t.dispatched_at = Some(T0 + 50 + n);
            }
            if to == Running && rng.below(2) == 0 {
                t.acked_at = Some(T0 + 60 + n);
            }
            batch.push(t);
        }
        let want: Vec<bool> = batch
            .iter()
            .map(|t| model_step(model.entry(t.agent_id).or_insert(None), t))
            .collect();
        assert!(want.iter().any(|w| *w) && want.iter().any(|w| !*w));
        let repeats = batch.len() - {
            let mut seen = std::collections::HashSet::new();
            batch.iter().filter(|t| seen.insert(t.agent_id)).count()
        };
        assert!(repeats > 500, "the batch repeats targets ({repeats})");
        check(
            b,
            "applied row by row",
            store.transition_targets(&batch).await?,
            want,
        );
        let got = rows_of(&store, &job).await?;
        for agent in &a {
            let want = model.get(agent).copied().flatten();
            check(b, &format!("target {agent}"), got.get(agent).copied(), want);
        }
        // The finished targets kept their results.
        let kept = target(&store, &job, a[0]).await?;
        check(
            b,
            "finished target untouched",
            (kept.state, kept.exit_code, kept.updated_at),
            (Succeeded, Some(0), T0 + 2),
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carried_step_times_fill_only_what_is_unset() -> Result<()> {
    use TargetState::*;
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let (job, a) = job_with(&store, org.id, 6, T0).await?;

        // Queued -> running standing for dispatched and acked: every stamp is written.
        let mut run = step(&job, a[0], Running, T0 + 30);
        run.dispatched_at = Some(T0 + 10);
        run.acked_at = Some(T0 + 20);
        // Already dispatched -> acked carrying a later dispatch: the first dispatch stays.
        store
            .transition_targets(&[step(&job, a[1], Dispatched, T0 + 5)])
            .await?;
        let mut ack = step(&job, a[1], Acked, T0 + 30);
        ack.dispatched_at = Some(T0 + 25);
        check(
            b,
            "carried steps",
            store.transition_targets(&[run, ack]).await?,
            vec![true, true],
        );
        check(
            b,
            "queued -> running with carried stamps",
            Row::of(&target(&store, &job, a[0]).await?),
            Row {
                state: Running,
                dispatched_at: Some(T0 + 10),
                acked_at: Some(T0 + 20),
                started_at: Some(T0 + 30),
                updated_at: T0 + 30,
            },
        );
        check(
            b,
            "dispatched -> acked keeps the first dispatch",
            Row::of(&target(&store, &job, a[1]).await?),
            Row {
                state: Acked,
                dispatched_at: Some(T0 + 5),
                acked_at: Some(T0 + 30),
                started_at: None,
                updated_at: T0 + 30,
            },
        );

        // A stamp of a step that is not before `to` is refused, and nothing is written.
        let mut bad = Vec::new();
        let mut t = step(&job, a[2], Dispatched, T0 + 40);
        t.dispatched_at = Some(T0 + 39);
        bad.push(t);
        let mut t = step(&job, a[2], Dispatched, T0 + 40);
        t.acked_at = Some(T0 + 39);
        bad.push(t);
        let mut t = step(&job, a[2], Acked, T0 + 40);
        t.acked_at = Some(T0 + 39);
        bad.push(t);
        for t in bad {
            check(
                b,
                &format!("refuse {t:?}"),
                kind(
                    store
                        .transition_targets(&[step(&job, a[2], Dispatched, T0 + 40), t])
                        .await,
                ),
                "invalid",
            );
        }
        check(
            b,
            "refused batches wrote nothing",
            target(&store, &job, a[2]).await?.state,
            Queued,
        );

        // An outcome carries the stamps of steps never written separately: queued -> result
        // gets them all; a target that has them keeps its own.
        let mut straight = outcome(&job, a[3], Succeeded, T0 + 100);
        straight.dispatched_at = Some(T0 + 70);
        straight.acked_at = Some(T0 + 80);
        straight.started_at = Some(T0 + 90);
        let mut late = outcome(&job, a[0], Succeeded, T0 + 100);
        late.dispatched_at = Some(T0 + 71);
        late.acked_at = Some(T0 + 81);
        late.started_at = Some(T0 + 91);
        check(
            b,
            "outcomes with stamps",
            store.record_outcomes(&[straight, late], T0 + 101).await?,
            vec![true, true],
        );
        check(
            b,
            "queued -> succeeded with carried stamps",
            Row::of(&target(&store, &job, a[3]).await?),
            Row {
                state: Succeeded,
                dispatched_at: Some(T0 + 70),
                acked_at: Some(T0 + 80),
                started_at: Some(T0 + 90),
                updated_at: T0 + 101,
            },
        );
        check(
            b,
            "running -> succeeded keeps its stamps",
            Row::of(&target(&store, &job, a[0]).await?),
            Row {
                state: Succeeded,
                dispatched_at: Some(T0 + 10),
                acked_at: Some(T0 + 20),
                started_at: Some(T0 + 30),
                updated_at: T0 + 101,
            },
        );
        store.close().await;
    }
    Ok(())
}
