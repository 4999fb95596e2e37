//! A SIGTERM drains the node: with the defaults a user gets (30 s heartbeats, 10 s grace), the
//! results agents deliver while the node shuts down are committed before the process exits, so
//! nothing is lost and nothing is judged a timeout.

use anyhow::{Context, Result};
use reap3r_store::{Store, TargetState, Uuid};

use crate::jobs::{WAIT, count, create, lines, metric, result, script_job, wait_job};
use crate::server_process::{Heartbeats, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_in_flight_are_committed_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::new(dir.path(), Heartbeats::Defaults)?;
    let (api, mut agents) = server.start_with_fleet(3).await?;
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let runs = dir.path().join("runs");
    // The scripts finish about two seconds after the SIGTERM: their results arrive while the
    // node drains, well inside the default grace period.
    let script = format!(
        "echo start; sleep 2; echo run >> {}; echo done",
        runs.display()
    );
    let job = create(&api, script_job(&ids, &script, 60)).await?;
    wait_job(&api, job, "all three running", |j| count(j, "running") == 3).await?;
    server.sigterm().await?;
    assert_eq!(
        lines(&runs),
        3,
        "every script finished before the node exited"
    );

    // The node is down: read what it committed straight from its database.
    let store = Store::open_sqlite_file(&server.database()).await?;
    let org = store
        .job(None, job)
        .await?
        .context("the job is stored")?
        .org_id;
    for agent in &ids {
        let target = store
            .job_target(org, job, *agent)
            .await?
            .context("target stored")?;
        assert_eq!(target.state, TargetState::Succeeded, "{target:?}");
        assert_eq!(target.stdout, "start\ndone\n");
        assert_eq!(target.exit_code, Some(0));
    }
    store.close().await;

    // Every result was committed before the process exited: after the restart nothing is stored
    // again. (An ack still queued when the connection closed makes that agent replay its result;
    // the new process answers it as a duplicate and stores nothing.)
    server.start().await?;
    let done = wait_job(&api, job, "the job to read as completed", |j| {
        j["status"] == "completed"
    })
    .await?;
    assert_eq!(count(&done, "succeeded"), 3, "{done}");
    crate::harness::eventually("agents back online", WAIT, || async {
        let stats = api.get("/api/agents/stats").await?.expect(200)?;
        Ok((stats["online"] == 3).then_some(()))
    })
    .await?;
    let metrics = reqwest::get(format!("http://{}/metrics", server.http))
        .await?
        .text()
        .await?;
    assert_eq!(metric(&metrics, "reap3r_job_results_stored_total")?, 0);
    let r = result(&api, job, ids[0]).await?;
    assert_eq!(r["stdout"], "start\ndone\n", "{r}");
    for agent in &mut agents {
        agent.kill().await?;
    }
    server.sigkill().await?;
    Ok(())
}
