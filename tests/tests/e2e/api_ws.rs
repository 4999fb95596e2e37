//! The event WebSocket with real agents: an agent enrolled with a token made over the API,
//! approved and revoked over the API, and the UI streams see enrolled/online/offline and audit
//! events, each filtered to what the caller may see.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use reap3r_actors::access::Caller;
use reap3r_actors::orgs::CreateOrg;
use reap3r_control_plane::cli::CreatedToken;
use reap3r_store::{AgentStatus, Backend};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::api_harness::{Api, default_org, id_of, logged_in};
use crate::harness::{AgentProcess, TestServer};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(api: &Api, via_query: bool) -> Result<Socket> {
    let token = api.bearer.clone().context("client has no token")?;
    let base = api.base.replace("http://", "ws://");
    let (socket, _) = if via_query {
        tokio_tungstenite::connect_async(format!("{base}/api/ws?access_token={token}")).await?
    } else {
        let mut req = format!("{base}/api/ws").into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        tokio_tungstenite::connect_async(req).await?
    };
    Ok(socket)
}

/// Reads events until one matches, failing after the timeout.
pub async fn wait_event(
    socket: &mut Socket,
    what: &str,
    mut matches: impl FnMut(&Value) -> bool,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?;
        match next {
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(&text)?;
                if matches(&event) {
                    return Ok(event);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("websocket error waiting for {what}: {e}"),
            None => bail!("websocket closed waiting for {what}"),
        }
    }
}

#[tokio::test]
async fn ui_streams_follow_a_real_agent_through_the_api() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let org = default_org(&server).await?.id;
    let admin = logged_in(&server, org, "ws-admin@test", "org_admin").await?;
    let viewer = logged_in(&server, org, "ws-viewer@test", "viewer").await?;
    let other_org = CreateOrg {
        name: "Elsewhere".into(),
        parent_org_id: None,
    }
    .run(&server.node().api.domain, &Caller::cli(org))
    .await?
    .id;
    let outsider = logged_in(&server, other_org, "ws-out@test", "org_admin").await?;

    // No credential, no stream.
    let base = admin.base.replace("http://", "ws://");
    match tokio_tungstenite::connect_async(format!("{base}/api/ws")).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => bail!("unauthenticated websocket was not refused: {other:?}"),
    }
    let mut admin_ws = connect(&admin, true).await?;
    let mut viewer_ws = connect(&viewer, false).await?;
    let mut outsider_ws = connect(&outsider, false).await?;

    let created = admin
        .post(
            "/api/enrollment/tokens",
            json!({ "label": "ws", "max_uses": 1, "require_approval": true }),
        )
        .await?
        .expect(200)?;
    let audit = wait_event(&mut admin_ws, "token audit event", |e| {
        e["type"] == "audit" && e["action"] == "enrollment_token.create"
    })
    .await?;
    assert_eq!(audit["actor"], "user:ws-admin@test");

    let commands = &created["commands"];
    let token = CreatedToken {
        id: id_of(&created["token"])?,
        token: created["secret"].as_str().unwrap_or_default().into(),
        org_id: org,
        expires_at: created["token"]["expires_at"].as_i64(),
        max_uses: Some(1),
        require_approval: true,
        server: commands["server"].as_str().unwrap_or_default().into(),
        fingerprint: commands["fingerprint"].as_str().unwrap_or_default().into(),
        server_key: commands["server_key"].as_str().unwrap_or_default().into(),
        command: commands["unix"].as_str().unwrap_or_default().into(),
    };
    let mut agent = AgentProcess::enrol(server.dir.path(), "ws-agent", &token).await?;
    let id = agent.id.to_string();
    for socket in [&mut admin_ws, &mut viewer_ws] {
        let e = wait_event(socket, "agent_enrolled", |e| e["type"] == "agent_enrolled").await?;
        assert_eq!(e["agent_id"], json!(id));
        assert_eq!(e["pending"], true);
    }
    agent.start()?;
    server
        .wait_status(agent.id, AgentStatus::Pending, Duration::from_secs(10))
        .await?;

    let approved = admin
        .post(&format!("/api/agents/{id}/approve"), json!({}))
        .await?
        .expect(200)?;
    assert_eq!(approved["status"], "offline");
    for socket in [&mut admin_ws, &mut viewer_ws] {
        wait_event(socket, "agent_online", |e| {
            e["type"] == "agent_online" && e["agent_id"] == json!(id)
        })
        .await?;
    }
    let listed = admin.get("/api/agents?status=online").await?.expect(200)?;
    assert_eq!(listed["items"][0]["id"], json!(id));

    // Revoking over the API closes the live session at once (not at the next presence sweep).
    admin
        .post(&format!("/api/agents/{id}/revoke"), json!({}))
        .await?
        .expect(200)?;
    for socket in [&mut admin_ws, &mut viewer_ws] {
        wait_event(socket, "agent_offline", |e| {
            e["type"] == "agent_offline" && e["agent_id"] == json!(id)
        })
        .await?;
    }
    let detail = admin.get(&format!("/api/agents/{id}")).await?.expect(200)?;
    assert_eq!(detail["status"], "revoked");

    // The viewer saw agent events but no audit records; the outsider saw nothing of this org:
    // the first thing each receives now is the next event they are entitled to.
    admin
        .post("/api/sites", json!({ "name": "after" }))
        .await?
        .expect(200)?;
    outsider
        .post("/api/sites", json!({ "name": "theirs" }))
        .await?
        .expect(200)?;
    let first = wait_event(&mut outsider_ws, "any event", |_| true).await?;
    assert_eq!(first["type"], "audit");
    assert_eq!(first["org_id"], json!(other_org.to_string()));
    assert_eq!(first["action"], "site.create");
    // Viewers lack audit:view, so no audit record ever reached them; the revoke's offline event
    // was their last one. Prove it by closing cleanly with nothing pending.
    viewer_ws.close(None).await?;
    while let Some(msg) = viewer_ws.next().await {
        if let Ok(Message::Text(text)) = msg {
            let e: Value = serde_json::from_str(&text)?;
            assert_ne!(e["type"], "audit", "viewer received an audit event: {e}");
        }
    }
    agent.kill().await?;
    Ok(())
}
