//! A SIGKILLed server with the defaults a user gets (30 s heartbeats, 10 s job grace): the
//! agents whose scripts were running notice the restarted endpoint at their next packet (it
//! resets their old connections, keyed by the secret in the data dir), reconnect at once and
//! replay their results, which are stored as the real outcome, not as timeouts (issue 17,
//! defect 1). Without the kept key, they waited out their QUIC idle timeout (3 × 30 + 10 s)
//! while the job engine judged every target `timed_out`.

use std::time::Duration;

use anyhow::{Context, Result};
use reap3r_store::{Backend, Uuid};

use crate::harness::{backends, database, eventually};
use crate::jobs::{count, create, lines, result, script_job, wait_job};
use crate::server_process::{Heartbeats, ServerProcess};

const AGENTS: usize = 12;
/// The scripts run this long; the server is killed `KILL_AFTER` into them and is down for
/// `DOWN_FOR`, so every script finishes after the restart.
const SCRIPT_S: u32 = 4;
const KILL_AFTER: Duration = Duration::from_millis(1_500);
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Every agent is back and every result stored this soon after the restart. An agent that had
/// to wait for its idle timeout (100 s) or even its next heartbeat (30 s) misses it.
const BACK_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_server_stores_the_agents_real_results() -> Result<()> {
    for backend in backends().await? {
        killed_mid_job(backend)
            .await
            .with_context(|| format!("on {backend:?}"))?;
    }
    Ok(())
}

async fn killed_mid_job(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = database(backend).await?;
    let mut server = ServerProcess::new(dir.path(), Heartbeats::Defaults)?;
    if let Some(db) = &db {
        server = server.with_env("REAP3R_DATABASE_URL", &db.url);
    }
    let (api, mut agents) = server.start_with_fleet(AGENTS).await?;
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let runs = dir.path().join("runs");
    let script = format!(
        "echo start; sleep {SCRIPT_S}; echo run >> {}; echo done",
        runs.display()
    );
    // A short timeout: without the fix the restarted job engine judges every target long
    // before the agents' idle timeout brings them back.
    let job = create(&api, script_job(&ids, &script, 10)).await?;
    let created = tokio::time::Instant::now();
    wait_job(&api, job, "every agent running", |j| {
        count(j, "running") == AGENTS as i64
    })
    .await?;
    tokio::time::sleep_until(created + KILL_AFTER).await;
    server.sigkill().await?;
    assert_eq!(
        lines(&runs),
        0,
        "the scripts were still running at the kill"
    );
    // The node is down for a while, as when a process manager restarts it.
    tokio::time::sleep(DOWN_FOR).await;
    server.start().await?;

    let done = eventually(
        "every result stored after the restart",
        BACK_WITHIN,
        || async {
            let j = api.get(&format!("/api/jobs/{job}")).await?.expect(200)?;
            Ok((j["status"] == "completed").then_some(j))
        },
    )
    .await?;
    assert_eq!(count(&done, "succeeded"), AGENTS as i64, "{done}");
    assert_eq!(count(&done, "timed_out"), 0, "{done}");
    for agent in &ids {
        let r = result(&api, job, *agent).await?;
        assert_eq!(r["state"], "succeeded", "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        assert_eq!(r["stdout"], "start\ndone\n", "{r}");
    }
    assert_eq!(
        lines(&runs),
        AGENTS,
        "each agent ran the script exactly once"
    );
    let stats = api.get("/api/agents/stats").await?.expect(200)?;
    assert_eq!(stats["online"], AGENTS as i64, "{stats}");

    for agent in &mut agents {
        agent.kill().await?;
    }
    server.sigkill().await?;
    Ok(())
}
