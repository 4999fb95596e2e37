//! Crashes are contained: a crashing session is dropped and its agent reconnects; a crashing
//! subsystem is restarted by the root supervisor.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use reap3r_actors::{RootMsg, SessionMsg, Subsystem};
use reap3r_store::AgentStatus;

use crate::harness::{TestFleet, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_is_restarted_by_reconnection_and_others_keep_serving() -> Result<()> {
    let fleet = TestFleet::builder().agents(2).spawn().await?;
    let server = &fleet.server;
    let (victim, bystander) = (fleet.agents[0].id, fleet.agents[1].id);
    let session = server
        .node()
        .registry
        .get(victim)
        .context("victim has a live session")?;
    let crashed_id = session.get_id();
    session.cast(SessionMsg::InjectFault)?;

    eventually(
        "the crash to be counted",
        Duration::from_secs(5),
        || async {
            Ok((server
                .node()
                .stats()
                .session_crashes
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1)
                .then_some(()))
        },
    )
    .await?;
    // The agent sees its connection closed, reconnects, and gets a fresh session.
    eventually(
        "a new session for the victim",
        Duration::from_secs(15),
        || async {
            Ok(server
                .node()
                .registry
                .get(victim)
                .filter(|s| s.get_id() != crashed_id)
                .map(|_| ()))
        },
    )
    .await?;
    server
        .wait_status(victim, AgentStatus::Online, Duration::from_secs(5))
        .await?;
    assert_eq!(server.agent(bystander).await?.status(), AgentStatus::Online);
    assert!(server.node().registry.get(bystander).is_some());
    Ok(())
}

/// The root supervisor owns the presence writer, the job supervisor and the session supervisor:
/// each one killed is counted and started again, and the node keeps serving — the agent comes
/// back online on a fresh session, `last_seen` keeps moving, jobs can still be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_supervisor_restarts_each_crashed_subsystem() -> Result<()> {
    let fleet = TestFleet::builder().agents(1).spawn().await?;
    let server = &fleet.server;
    let agent = fleet.agents[0].id;
    let node = server.node();
    let first_session = node.registry.get(agent).context("live session")?.get_id();
    let first_jobs = node.job_supervisor().context("job supervisor")?.get_id();
    let restarts = || node.stats().subsystem_restarts.load(Ordering::Relaxed);
    for (n, which) in [Subsystem::Presence, Subsystem::Jobs, Subsystem::Sessions]
        .into_iter()
        .enumerate()
    {
        node.root.cast(RootMsg::InjectFault(which))?;
        eventually(
            &format!("{which:?} to be restarted"),
            Duration::from_secs(10),
            || async { Ok((restarts() == n as u64 + 1).then_some(())) },
        )
        .await?;
    }
    let jobs = node
        .job_supervisor()
        .context("job supervisor after restart")?;
    assert_ne!(jobs.get_id(), first_jobs, "a new job supervisor runs");
    eventually(
        "the agent on a fresh session",
        Duration::from_secs(15),
        || async {
            Ok(node
                .registry
                .get(agent)
                .filter(|s| s.get_id() != first_session)
                .map(|_| ()))
        },
    )
    .await?;
    server
        .wait_status(agent, AgentStatus::Online, Duration::from_secs(10))
        .await?;
    let seen = server.agent(agent).await?.last_seen;
    eventually(
        "last_seen written by the new presence writer",
        Duration::from_secs(10),
        || async { Ok((server.agent(agent).await?.last_seen > seen).then_some(())) },
    )
    .await?;
    Ok(())
}
