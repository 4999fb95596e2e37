//! A crashing session is contained: the supervisor survives, the agent reconnects.

use std::time::Duration;

use anyhow::{Context, Result};
use reap3r_actors::SessionMsg;
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
