//! Bad input from the network: each case closes only the offending connection, with a clear
//! reason, is counted, and the server keeps serving everyone else.

use std::time::Duration;

use anyhow::{Result, bail};
use reap3r_actors::access::Caller;
use reap3r_actors::enrolment::{
    RevokeAgent, RevokeEnrolmentToken, SetAgentApproval, hash_enrolment_token,
};
use reap3r_store::{AgentApproval, AgentStatus, NewEnrolmentToken, Uuid};
use reap3r_wire::{
    CloseCode, EnrolRequest, Heartbeat, Hello, InventorySummary, Message, SigningKey,
};

use crate::harness::{RawClient, TestFleet, TestServer};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn enrol_request(token: &str, key: &SigningKey) -> EnrolRequest {
    EnrolRequest {
        token: token.into(),
        public_key: key.verifying_key().to_bytes(),
        hostname: "raw-client".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "test".into(),
    }
}

fn hello() -> Hello {
    Hello {
        agent_version: "test".into(),
        hostname: "raw-client".into(),
        capabilities: vec!["heartbeat".into()],
        inventory: InventorySummary::default(),
        sealing_key: None,
    }
}

fn heartbeat() -> Message {
    Message::Heartbeat(Heartbeat {
        uptime_s: 1,
        cpu_centipercent: 0,
        memory_used_bytes: 0,
    })
}

/// Enrols over a raw connection with `key`; returns the agent id.
async fn enrol_raw(server: &TestServer, token: &str, key: &SigningKey) -> Result<Uuid> {
    let mut c = RawClient::connect(server).await?;
    c.enrol(key, enrol_request(token, key)).await?;
    match c.read_answer().await? {
        Message::EnrolResult(r) => Ok(Uuid::from_bytes(r.agent_id)),
        other => bail!("expected an enrolment result, got {other:?}"),
    }
}

/// Sends a hello as `id` signed with `key`; returns the client, waiting for the answer.
async fn hello_raw(server: &TestServer, id: Uuid, key: &SigningKey) -> Result<RawClient> {
    let mut c = RawClient::connect(server).await?;
    c.hello(id, key, hello()).await?;
    Ok(c)
}

async fn expect_close(
    server: &TestServer,
    client: &RawClient,
    code: CloseCode,
    reason_has: &str,
) -> Result<()> {
    let before = server.close_count(code);
    let (got, reason) = client.closed().await?;
    assert_eq!(got, code, "close code (reason: {reason})");
    assert!(
        reason.contains(reason_has),
        "reason '{reason}' should mention '{reason_has}'"
    );
    crate::harness::eventually(
        &format!("{code} to be counted"),
        Duration::from_secs(2),
        || async move { Ok((server.close_count(code) >= before.max(1)).then_some(())) },
    )
    .await
}

async fn still_serving(fleet: &TestFleet) -> Result<()> {
    for agent in &fleet.agents {
        assert_eq!(
            fleet.server.agent(agent.id).await?.status(),
            AgentStatus::Online,
            "healthy agent dropped"
        );
    }
    // And new connections are still accepted.
    RawClient::connect(&fleet.server).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_is_refused_for_unknown_pending_rejected_revoked_and_forged_agents() -> Result<()> {
    let fleet = TestFleet::builder().agents(1).spawn().await?;
    let server = &fleet.server;
    let open = server.token(false, None, "1h").await?;
    let gated = server.token(true, None, "1h").await?;

    let c = hello_raw(server, Uuid::new_v4(), &key(1)).await?;
    expect_close(server, &c, CloseCode::UnknownAgent, "not enrolled").await?;

    let pending = enrol_raw(server, &gated.token, &key(2)).await?;
    let c = hello_raw(server, pending, &key(2)).await?;
    expect_close(server, &c, CloseCode::PendingApproval, "approval").await?;

    // The agents are not connected, so there is no live session to withdraw.
    let (domain, noop) = (&server.node().api.domain, |_: Uuid, _: &str| {});
    let cli = Caller::cli(gated.org_id);
    let rejected = enrol_raw(server, &gated.token, &key(3)).await?;
    SetAgentApproval {
        id: rejected,
        approval: AgentApproval::Rejected,
    }
    .run(domain, &cli, &noop)
    .await?;
    let c = hello_raw(server, rejected, &key(3)).await?;
    expect_close(server, &c, CloseCode::Rejected, "rejected").await?;

    let revoked = enrol_raw(server, &open.token, &key(4)).await?;
    RevokeAgent { id: revoked }.run(domain, &cli, &noop).await?;
    let c = hello_raw(server, revoked, &key(4)).await?;
    expect_close(server, &c, CloseCode::Revoked, "revoked").await?;

    // Someone who knows an agent's id but not its key.
    let victim = enrol_raw(server, &open.token, &key(5)).await?;
    let c = hello_raw(server, victim, &key(6)).await?;
    expect_close(server, &c, CloseCode::BadSignature, "signature").await?;
    assert_ne!(server.agent(victim).await?.status(), AgentStatus::Online);

    still_serving(&fleet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_is_refused_for_unknown_expired_used_up_and_revoked_tokens() -> Result<()> {
    let fleet = TestFleet::builder().agents(1).spawn().await?;
    let server = &fleet.server;
    let store = &server.node().store;
    let org = store.default_org(0).await?;
    let now = reap3r_actors::Clock::now_ms(&reap3r_actors::SystemClock) as i64;
    let expired_secret = "r3t_expired-token-for-test";
    // Expired from the start, which no operation would create: written straight into the store.
    let mut tx = store.begin().await?;
    tx.create_enrolment_token(
        &NewEnrolmentToken {
            org_id: org.id,
            token_hash: hash_enrolment_token(expired_secret),
            label: None,
            expires_at: Some(now - 1_000),
            max_uses: None,
            require_approval: false,
            created_by: None,
        },
        now - 10_000,
    )
    .await?;
    tx.commit().await?;
    let single = server.token(false, Some(1), "1h").await?;
    enrol_raw(server, &single.token, &key(10)).await?;
    let revoked = server.token(false, None, "1h").await?;
    RevokeEnrolmentToken { id: revoked.id }
        .run(&server.node().api.domain, &Caller::cli(org.id))
        .await?;

    for (token, needle) in [
        ("r3t_never-issued", "unknown"),
        (expired_secret, "expired"),
        (single.token.as_str(), "used"),
        (revoked.token.as_str(), "revoked"),
    ] {
        let mut c = RawClient::connect(server).await?;
        c.enrol(&key(11), enrol_request(token, &key(11))).await?;
        expect_close(server, &c, CloseCode::TokenInvalid, needle).await?;
    }
    assert_eq!(
        store.list_agents(None).await?.len(),
        2,
        "only the fleet agent and the one good enrolment exist"
    );
    still_serving(&fleet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_forgeries_oversized_frames_and_garbage_close_only_that_connection() -> Result<()> {
    let fleet = TestFleet::builder().agents(1).spawn().await?;
    let server = &fleet.server;
    let token = server.token(false, None, "1h").await?;
    let agent_key = key(20);
    let id = enrol_raw(server, &token.token, &agent_key).await?;

    // Replay: the same signed heartbeat twice in one session.
    let mut c = hello_raw(server, id, &agent_key).await?;
    assert!(matches!(c.read_answer().await?, Message::Welcome(_)));
    let hb = c.seal(heartbeat())?;
    c.send_envelope(&hb).await?;
    c.send_envelope(&hb).await?;
    expect_close(server, &c, CloseCode::Replay, "already seen").await?;

    // A live session, then an envelope signed by another key.
    let mut c = hello_raw(server, id, &agent_key).await?;
    assert!(matches!(c.read_answer().await?, Message::Welcome(_)));
    let mut forger = c.outbound(id.into_bytes(), &key(21));
    let forged = {
        // Skip past the sequence numbers the genuine session used.
        forger.seal(heartbeat(), 0);
        forger.seal(heartbeat(), 0)
    };
    c.send_envelope(&forged).await?;
    expect_close(server, &c, CloseCode::BadSignature, "signature").await?;

    // An announced frame length far beyond the cap: refused before any allocation.
    let mut c = RawClient::connect(server).await?;
    c.send_raw(&u32::MAX.to_be_bytes()).await?;
    expect_close(server, &c, CloseCode::FrameTooLarge, "exceeds").await?;

    // Well-framed garbage.
    let mut c = RawClient::connect(server).await?;
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    c.send_envelope(&garbage).await?;
    expect_close(server, &c, CloseCode::ProtocolError, "").await?;

    // A hello captured from one session and replayed into another.
    let mut first = RawClient::connect(server).await?;
    let captured = first
        .outbound(id.into_bytes(), &agent_key)
        .seal(Message::Hello(hello()), 0);
    first.send_envelope(&captured).await?;
    assert!(matches!(
        first.read_message(server).await?,
        Message::Welcome(_)
    ));
    let mut second = RawClient::connect(server).await?;
    second.send_envelope(&captured).await?;
    expect_close(server, &second, CloseCode::Replay, "another session").await?;

    still_serving(&fleet).await
}
