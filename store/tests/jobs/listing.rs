//! Listing jobs and their targets in keyset pages, and the organisation's stats.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_are_listed_newest_first_with_filters_and_keyset_pages() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let one = random_agents(1);
        let mut all = Vec::new();
        // (created_at offset, type, creator); three share a timestamp so the id breaks the tie.
        for (i, (dt, job_type, by)) in [
            (0, "run_script", "alice"),
            (10, "reboot", "bob"),
            (10, "run_script", "bob"),
            (10, "run_script", "alice"),
            (20, "process_list", "alice"),
            (30, "run_script", "carol"),
            (40, "reboot", "alice"),
        ]
        .into_iter()
        .enumerate()
        {
            let job = create_job(
                &store,
                &new_job(acme.id, job_type, by),
                &targets_for(&one),
                T0 + dt,
            )
            .await?;
            if i % 3 == 1 {
                store
                    .finish_job(job.id, JobStatus::Completed, T0 + 100)
                    .await?;
            }
            all.push(job.id);
        }
        create_job(
            &store,
            &new_job(other.id, "run_script", "alice"),
            &targets_for(&one),
            T0 + 50,
        )
        .await?;

        let stored: Vec<Job> = {
            let mut v = Vec::new();
            for id in &all {
                v.push(store.job(None, *id).await?.ok_or_else(|| anyhow!("lost"))?);
            }
            v
        };
        let newest_first = |pick: &dyn Fn(&Job) -> bool| -> Vec<Uuid> {
            let mut v: Vec<&Job> = stored.iter().filter(|j| pick(j)).collect();
            v.sort_by(|x, y| y.created_at.cmp(&x.created_at).then(y.id.cmp(&x.id)));
            v.into_iter().map(|j| j.id).collect()
        };
        let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();

        check(
            b,
            "all, newest first",
            ids(store.list_jobs(acme.id, &JobFilter::default(), 100).await?),
            newest_first(&|_| true),
        );
        let cases: Vec<(&str, JobFilter, Pick)> = vec![
            (
                "status completed",
                JobFilter {
                    status: Some(JobStatus::Completed),
                    ..JobFilter::default()
                },
                Box::new(|j| j.status == JobStatus::Completed),
            ),
            (
                "status active",
                JobFilter {
                    status: Some(JobStatus::Active),
                    ..JobFilter::default()
                },
                Box::new(|j| j.status == JobStatus::Active),
            ),
            (
                "type",
                JobFilter {
                    job_type: Some("run_script".into()),
                    ..JobFilter::default()
                },
                Box::new(|j| j.job_type == "run_script"),
            ),
            (
                "creator",
                JobFilter {
                    created_by: Some("alice".into()),
                    ..JobFilter::default()
                },
                Box::new(|j| j.created_by == "alice"),
            ),
            (
                "type and creator",
                JobFilter {
                    job_type: Some("reboot".into()),
                    created_by: Some("bob".into()),
                    ..JobFilter::default()
                },
                Box::new(|j| j.job_type == "reboot" && j.created_by == "bob"),
            ),
            (
                "nothing",
                JobFilter {
                    created_by: Some("nobody".into()),
                    ..JobFilter::default()
                },
                Box::new(|_| false),
            ),
        ];
        for (case, filter, pick) in &cases {
            check(
                b,
                case,
                ids(store.list_jobs(acme.id, filter, 100).await?),
                newest_first(pick.as_ref()),
            );
        }

        // Keyset pages of two, with and without a filter.
        for (case, filter, pick) in [
            (
                "pages",
                JobFilter::default(),
                Box::new(|_: &Job| true) as Pick,
            ),
            (
                "filtered pages",
                JobFilter {
                    job_type: Some("run_script".into()),
                    ..JobFilter::default()
                },
                Box::new(|j: &Job| j.job_type == "run_script"),
            ),
        ] {
            let mut filter = filter;
            let mut walked = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.list_jobs(acme.id, &filter, 2).await?;
                assert!(page.len() <= 2, "[{b}] {case}: page too long");
                let Some(last) = page.last() else { break };
                filter.before = Some((last.created_at, last.id));
                walked.extend(ids(page));
                pages += 1;
                assert!(pages < 10, "[{b}] {case}: paging does not end");
            }
            check(b, case, walked, newest_first(pick.as_ref()));
        }
        check(
            b,
            "limit clamped up to 1",
            store
                .list_jobs(acme.id, &JobFilter::default(), 0)
                .await?
                .len(),
            1,
        );
        check(
            b,
            "other org sees its own only",
            store
                .list_jobs(other.id, &JobFilter::default(), 100)
                .await?
                .len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_are_paged_by_agent_with_a_state_filter() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let (job, a) = job_with(&store, acme.id, 25, T0).await?;
        let dispatched: Vec<TargetTransition> = a
            .iter()
            .step_by(3)
            .map(|x| step(&job, *x, TargetState::Dispatched, T0 + 5))
            .collect();
        store.transition_targets(&dispatched).await?;

        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_job_targets(acme.id, job.id, None, after, 10)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.agent_id);
            walked.extend(page.into_iter().map(|t| t.agent_id));
            assert!(walked.len() <= 25, "[{b}] paging does not end");
        }
        check(b, "all targets by agent", walked, a.clone());

        let want: Vec<Uuid> = a.iter().step_by(3).copied().collect();
        let got: Vec<Uuid> = store
            .list_job_targets(acme.id, job.id, Some(TargetState::Dispatched), None, 100)
            .await?
            .into_iter()
            .map(|t| t.agent_id)
            .collect();
        check(b, "dispatched only", got, want.clone());
        let got: Vec<Uuid> = store
            .list_job_targets(
                acme.id,
                job.id,
                Some(TargetState::Dispatched),
                Some(want[2]),
                2,
            )
            .await?
            .into_iter()
            .map(|t| t.agent_id)
            .collect();
        check(
            b,
            "dispatched page after the third",
            got,
            want[3..5].to_vec(),
        );
        check(
            b,
            "queued count",
            store
                .list_job_targets(acme.id, job.id, Some(TargetState::Queued), None, 100)
                .await?
                .len(),
            25 - want.len(),
        );
        check(
            b,
            "none succeeded",
            store
                .list_job_targets(acme.id, job.id, Some(TargetState::Succeeded), None, 100)
                .await?,
            vec![],
        );
        check(
            b,
            "other org",
            store
                .list_job_targets(other.id, job.id, None, None, 100)
                .await?,
            vec![],
        );
        check(
            b,
            "limit clamped up to 1",
            store
                .list_job_targets(acme.id, job.id, None, None, -5)
                .await?
                .len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_count_jobs_and_targets_of_the_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        check(
            b,
            "empty",
            store.job_stats(acme.id).await?,
            JobStats::default(),
        );
        let (j1, a1) = job_with(&store, acme.id, 5, T0).await?;
        let (j2, a2) = job_with(&store, acme.id, 3, T0 + 1).await?;
        let (j3, _) = job_with(&store, acme.id, 2, T0 + 2).await?;
        job_with(&store, other.id, 7, T0).await?;
        store
            .transition_targets(&[
                step(&j1, a1[0], TargetState::Dispatched, T0 + 5),
                step(&j1, a1[1], TargetState::Running, T0 + 5),
            ])
            .await?;
        store
            .record_outcomes(
                &[
                    outcome(&j2, a2[0], TargetState::Succeeded, T0 + 9),
                    outcome(&j2, a2[1], TargetState::TimedOut, T0 + 9),
                    outcome(&j2, a2[2], TargetState::Expired, T0 + 9),
                ],
                T0 + 10,
            )
            .await?;
        store
            .finish_job(j2.id, JobStatus::Completed, T0 + 10)
            .await?;
        store
            .finish_job(j3.id, JobStatus::Cancelled, T0 + 10)
            .await?;
        check(
            b,
            "stats",
            store.job_stats(acme.id).await?,
            JobStats {
                active: 1,
                completed: 1,
                cancelled: 1,
                targets: counts(&[
                    (TargetState::Queued, 5),
                    (TargetState::Dispatched, 1),
                    (TargetState::Running, 1),
                    (TargetState::Succeeded, 1),
                    (TargetState::TimedOut, 1),
                    (TargetState::Expired, 1),
                ]),
            },
        );
        let theirs = store.job_stats(other.id).await?;
        check(
            b,
            "other org",
            (theirs.active, theirs.targets.total()),
            (1, 7),
        );
        store.close().await;
    }
    Ok(())
}
