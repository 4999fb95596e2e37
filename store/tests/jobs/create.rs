//! Creating a job with its targets, and at scale.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_job_stores_the_job_and_its_targets() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let mut agents = random_agents(1_000);
        let mut new = new_job(acme.id, "run_script", "alice@example.com");
        new.batch_size = Some(50);
        let job = create_job(&store, &new, &targets_for(&agents), T0).await?;
        let want = Job {
            id: new.id,
            org_id: acme.id,
            job_type: "run_script".into(),
            payload: new.payload.clone(),
            spec_hex: new.spec_hex.clone(),
            targets: new.targets.clone(),
            created_by: "alice@example.com".into(),
            created_at: T0,
            timeout_s: 60,
            expires_at: Some(T0 + 3_600_000),
            batch_size: Some(50),
            status: JobStatus::Active,
            cancel_requested_at: None,
            finished_at: None,
            total_targets: 1_000,
        };
        check(b, "returned job", &job, &want);
        check(
            b,
            "read back",
            store.job(Some(acme.id), job.id).await?,
            Some(want.clone()),
        );
        check(
            b,
            "any org",
            store.job(None, job.id).await?,
            Some(want.clone()),
        );
        check(
            b,
            "other org",
            store.job(Some(other.id), job.id).await?,
            None,
        );
        check(b, "unknown", store.job(None, Uuid::new_v4()).await?, None);
        check(
            b,
            "counts",
            store.job_target_counts(job.id).await?,
            counts(&[(TargetState::Queued, 1_000)]),
        );
        check(
            b,
            "counts total",
            store.job_target_counts(job.id).await?.total(),
            1_000,
        );
        check(
            b,
            "no counts for an unknown job",
            store.job_target_counts(Uuid::new_v4()).await?,
            TargetCounts::default(),
        );
        agents.sort();
        let states = store.job_target_states(job.id).await?;
        check(
            b,
            "target states, by agent",
            states.clone(),
            agents
                .iter()
                .map(|a| (*a, TargetState::Queued, None))
                .collect::<Vec<_>>(),
        );
        check(
            b,
            "targets with their grants, by agent",
            store.job_target_grants(job.id).await?,
            agents
                .iter()
                .map(|a| JobTargetGrant {
                    agent_id: *a,
                    state: TargetState::Queued,
                    dispatched_at: None,
                    grant_hex: format!("{:0>64}", a.simple()),
                    signature_hex: "ab".repeat(64),
                    sealed_hex: None,
                })
                .collect::<Vec<_>>(),
        );
        let first = target(&store, &job, agents[0]).await?;
        check(
            b,
            "one target",
            first,
            JobTarget {
                job_id: job.id,
                agent_id: agents[0],
                org_id: acme.id,
                state: TargetState::Queued,
                grant_hex: format!("{:0>64}", agents[0].simple()),
                signature_hex: "ab".repeat(64),
                queued_at: T0,
                dispatched_at: None,
                acked_at: None,
                started_at: None,
                finished_at: None,
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                data: None,
                error: None,
                updated_at: T0,
            },
        );
        check(
            b,
            "target of another org",
            store.job_target(other.id, job.id, agents[0]).await?,
            None,
        );
        check(b, "active", store.active_jobs().await?, vec![want.clone()]);

        // Refusals.
        check(
            b,
            "duplicate job id",
            kind(create_job(&store, &new, &targets_for(&random_agents(1)), T0).await),
            "conflict",
        );
        let one = random_agents(1);
        check(
            b,
            "agent twice",
            kind(
                create_job(
                    &store,
                    &new_job(acme.id, "run_script", "a"),
                    &targets_for(&[one[0], one[0]]),
                    T0,
                )
                .await,
            ),
            "invalid",
        );
        check(
            b,
            "no targets",
            kind(create_job(&store, &new_job(acme.id, "run_script", "a"), &[], T0).await),
            "invalid",
        );
        // The job operation checks the timeout's range; the schema still refuses zero.
        let mut zero = new_job(acme.id, "run_script", "a");
        zero.timeout_s = 0;
        check(
            b,
            "zero timeout",
            create_job(&store, &zero, &targets_for(&one), T0)
                .await
                .is_err(),
            true,
        );
        check(
            b,
            "unknown org",
            kind(
                create_job(
                    &store,
                    &new_job(Uuid::new_v4(), "run_script", "a"),
                    &targets_for(&one),
                    T0,
                )
                .await,
            ),
            "invalid",
        );
        check(
            b,
            "refusals wrote nothing",
            store.active_jobs().await?.len(),
            1,
        );
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_targets_are_created_quickly() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "big", T0).await?;
        let started = Instant::now();
        let (job, _) = job_with(&store, org.id, 10_000, T0).await?;
        let elapsed = started.elapsed();
        eprintln!("[{b}] created a job with 10,000 targets in {elapsed:?}");
        check(b, "total", job.total_targets, 10_000);
        check(
            b,
            "all queued",
            store.job_target_counts(job.id).await?,
            counts(&[(TargetState::Queued, 10_000)]),
        );
        // Generous for an unoptimised build on a busy machine; typical is well under a second.
        assert!(elapsed.as_secs() < 20, "[{b}] took {elapsed:?}");
        store.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_targets_sealed_secrets_are_stored_with_its_grant() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let mut agents = random_agents(3);
        agents.sort();
        let mut targets = targets_for(&agents);
        // The first two have secrets (different bytes per agent), the third none.
        targets[0].sealed_hex = Some("0a0b".into());
        targets[1].sealed_hex = Some("ff".repeat(300));
        let new = new_job(acme.id, "run_script", "alice@example.com");
        let job = create_job(&store, &new, &targets, T0).await?;
        let loaded = store.job_target_grants(job.id).await?;
        check(
            b,
            "sealed hex per target",
            loaded
                .iter()
                .map(|t| t.sealed_hex.clone())
                .collect::<Vec<_>>(),
            vec![Some("0a0b".to_owned()), Some("ff".repeat(300)), None],
        );
        store.close().await;
    }
    Ok(())
}
