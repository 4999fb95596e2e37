//! Enrolment and presence: online at hello, offline after missed heartbeats, back after restart.

use std::time::Duration;

use reap3r_control_plane::cli::{AgentCommand, Command, run_admin};
use reap3r_store::{AgentStatus, Backend};

use crate::harness::{AgentProcess, TestFleet, backends, eventually};

async fn lifecycle(backend: Backend) -> anyhow::Result<()> {
    let mut fleet = TestFleet::builder()
        .agents(3)
        .backend(backend)
        .spawn()
        .await?;
    let hb = Duration::from_secs(u64::from(fleet.server.config.heartbeat_interval_s));
    let ids: Vec<_> = fleet.agents.iter().map(|a| a.id).collect();

    // Presence is written in batches; last_seen moves while agents heartbeat.
    let first_seen = fleet
        .server
        .agent(ids[1])
        .await?
        .last_seen
        .unwrap_or_default();
    eventually("last_seen to advance", hb * 5, || async {
        Ok((fleet
            .server
            .agent(ids[1])
            .await?
            .last_seen
            .unwrap_or_default()
            > first_seen)
            .then_some(()))
    })
    .await?;

    // A killed agent says nothing; it must be offline within 3 heartbeat intervals (plus the
    // presence tick and a little slack for a loaded CI machine).
    fleet.agents[0].kill().await?;
    let killed_at = tokio::time::Instant::now();
    fleet
        .server
        .wait_status(
            ids[0],
            AgentStatus::Offline,
            hb * 3 + Duration::from_secs(3),
        )
        .await?;
    assert!(
        killed_at.elapsed() >= hb,
        "offline too early: the agent was heartbeating"
    );
    assert!(
        fleet
            .server
            .close_count(reap3r_wire::CloseCode::HeartbeatTimeout)
            >= 1
    );
    for id in &ids[1..] {
        assert_eq!(fleet.server.agent(*id).await?.status(), AgentStatus::Online);
    }

    // Restart: the survivors reconnect on their own; the killed one stays offline.
    fleet.server.restart().await?;
    for id in &ids[1..] {
        fleet
            .server
            .wait_status(*id, AgentStatus::Online, Duration::from_secs(20))
            .await?;
    }
    assert_eq!(
        fleet.server.agent(ids[0]).await?.status(),
        AgentStatus::Offline
    );
    fleet.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_online_killed_one_offline_restart_brings_the_rest_back() -> anyhow::Result<()>
{
    for backend in backends().await? {
        lifecycle(backend)
            .await
            .map_err(|e| e.context(format!("backend {backend:?}")))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_required_agent_waits_until_approved_from_the_cli() -> anyhow::Result<()> {
    let fleet = TestFleet::builder().agents(0).spawn().await?;
    let server = &fleet.server;
    let token = server.token(true, Some(1), "1h").await?;
    let mut agent = AgentProcess::enrol(server.dir.path(), "pending", &token).await?;
    assert_eq!(server.agent(agent.id).await?.status(), AgentStatus::Pending);
    agent.start()?;
    eventually(
        "a pending-approval refusal",
        Duration::from_secs(10),
        || async {
            Ok((server.close_count(reap3r_wire::CloseCode::PendingApproval) > 0).then_some(()))
        },
    )
    .await?;
    assert_eq!(server.agent(agent.id).await?.status(), AgentStatus::Pending);

    // The CLI path, with the same config as the running server.
    let out = run_admin(
        &server.config,
        Command::Agent(AgentCommand::Approve { id: agent.id }),
    )
    .await?;
    assert!(out.contains("approved"), "{out}");
    server
        .wait_status(agent.id, AgentStatus::Online, Duration::from_secs(15))
        .await?;

    // Revocation from the CLI withdraws the live session.
    run_admin(
        &server.config,
        Command::Agent(AgentCommand::Revoke { id: agent.id }),
    )
    .await?;
    server
        .wait_status(agent.id, AgentStatus::Revoked, Duration::from_secs(5))
        .await?;
    eventually(
        "the revoked agent to be disconnected",
        Duration::from_secs(15),
        || async { Ok((!server.agent(agent.id).await?.connected).then_some(())) },
    )
    .await?;
    agent.kill().await?;
    Ok(())
}
