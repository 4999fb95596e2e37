//! Finishing a job once, and cancel requests within the organisation.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_finish_once_and_cancel_within_their_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let (job, _) = job_with(&store, acme.id, 3, T0).await?;
        let (done, _) = job_with(&store, acme.id, 3, T0 + 1).await?;

        // finish_job
        check(
            b,
            "finish as active is refused",
            kind(store.finish_job(done.id, JobStatus::Active, T0 + 10).await),
            "invalid",
        );
        check(
            b,
            "finish",
            store
                .finish_job(done.id, JobStatus::Completed, T0 + 10)
                .await?,
            true,
        );
        check(
            b,
            "finish again",
            store
                .finish_job(done.id, JobStatus::Cancelled, T0 + 20)
                .await?,
            false,
        );
        check(
            b,
            "unknown job",
            store
                .finish_job(Uuid::new_v4(), JobStatus::Completed, T0)
                .await?,
            false,
        );
        let finished = store
            .job(None, done.id)
            .await?
            .ok_or_else(|| anyhow!("lost"))?;
        check(
            b,
            "first finish kept",
            (finished.status, finished.finished_at),
            (JobStatus::Completed, Some(T0 + 10)),
        );
        check(
            b,
            "active jobs",
            store
                .active_jobs()
                .await?
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>(),
            vec![job.id],
        );

        // request_job_cancel
        check(
            b,
            "other org",
            request_job_cancel(&store, other.id, job.id, T0 + 30).await?,
            None,
        );
        check(
            b,
            "untouched by the other org",
            store
                .job(None, job.id)
                .await?
                .and_then(|j| j.cancel_requested_at),
            None,
        );
        check(
            b,
            "unknown job",
            request_job_cancel(&store, acme.id, Uuid::new_v4(), T0 + 30).await?,
            None,
        );
        let cancelled = request_job_cancel(&store, acme.id, job.id, T0 + 40)
            .await?
            .ok_or_else(|| anyhow!("job not returned"))?;
        check(
            b,
            "cancel requested, still active",
            (cancelled.cancel_requested_at, cancelled.status),
            (Some(T0 + 40), JobStatus::Active),
        );
        let again = request_job_cancel(&store, acme.id, job.id, T0 + 50)
            .await?
            .ok_or_else(|| anyhow!("job not returned"))?;
        check(
            b,
            "first request kept",
            again.cancel_requested_at,
            Some(T0 + 40),
        );
        let late = request_job_cancel(&store, acme.id, done.id, T0 + 60)
            .await?
            .ok_or_else(|| anyhow!("job not returned"))?;
        check(
            b,
            "finished job is not marked",
            (late.cancel_requested_at, late.status),
            (None, JobStatus::Completed),
        );
        check(
            b,
            "the actor finishes it",
            store
                .finish_job(job.id, JobStatus::Cancelled, T0 + 70)
                .await?,
            true,
        );
        check(b, "none active", store.active_jobs().await?, vec![]);
        store.close().await;
    }
    Ok(())
}
