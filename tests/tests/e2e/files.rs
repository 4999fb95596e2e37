//! File transfers with real agents over QUIC: a 50 MB push and a 50 MB pull, each cut midway
//! (the agent's connection closed), resume and verify; the pulled file downloads whole and in
//! ranges; progress goes out on the event socket; a corrupted chunk is refused by the agent and
//! the chunk sent again is taken; traversal, device and FIFO paths and forged grants are
//! refused.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use reap3r_actors::{
    AgentChannel, AgentCommand, AgentRouter, ChannelRequest, Delivery, LocalRouter,
};
use reap3r_store::{Backend, Uuid};
use reap3r_wire::{
    CloseCode, FILE_CHUNK_BYTES, FileAck, FileChunk, FileDirection, FileDone, FileGrant, FileOpen,
    Message as Wire, SigningKey,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::api_harness::{Api, default_org, logged_in, now_ms};
use crate::api_ws::{Socket, connect};
use crate::harness::{TestFleet, backends, eventually};

const WAIT: Duration = Duration::from_secs(60);
const BIG: usize = 50 * 1024 * 1024;
/// The transfers are paced (a real setting, for links a transfer must not fill) so that the
/// cut lands midway: 50 MB at 16 MiB/s take about 3 s.
const RATE_KIB_S: u64 = 16 * 1024;
/// The cut comes once the receiver holds this much.
const CUT_AT: u64 = 8 * 1024 * 1024;

/// Bytes that do not repeat at the chunk size (a chunk put at the wrong offset shows).
fn content(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = *blake3::hash(b"reap3r file transfer test").as_bytes();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = *blake3::hash(&block).as_bytes();
    }
    out.truncate(len);
    out
}

fn hex_of(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// A GET with the client's bearer, answered as raw bytes.
async fn get_bytes(api: &Api, path: &str, range: Option<&str>) -> Result<reqwest::Response> {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", api.base))
        .bearer_auth(api.bearer.clone().context("no token")?);
    if let Some(range) = range {
        req = req.header("range", range);
    }
    Ok(req.send().await?)
}

/// Waits for a `file_transfer` event of `transfer` past `held` bytes, then cuts the agent's
/// connection (the server closes it; the agent reconnects).
async fn cut_midway(fleet: &TestFleet, events: &mut Socket, transfer: &str) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let seen = loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow!("no progress event of {transfer}"))?;
        let Some(Ok(Message::Text(text))) = next else {
            continue;
        };
        let event: Value = serde_json::from_str(&text)?;
        if event["type"] != "file_transfer" || event["transfer_id"] != transfer {
            continue;
        }
        if event["status"] != "running" {
            bail!("the transfer ended before the cut: {event}");
        }
        let held = event["bytes_done"].as_u64().unwrap_or(0);
        if held >= CUT_AT {
            break held;
        }
    };
    let router = LocalRouter::new(fleet.server.node().registry.clone());
    let kicked = router.deliver(
        fleet.agents[0].id,
        AgentCommand::Kick {
            code: CloseCode::Internal,
            reason: "test cuts the link".into(),
        },
    );
    assert_eq!(kicked, Delivery::Delivered);
    Ok(seen)
}

async fn wait_ended(api: &Api, transfer: &str) -> Result<Value> {
    eventually("the transfer's end", WAIT, || async {
        let t = api
            .get(&format!("/api/transfers/{transfer}"))
            .await?
            .expect(200)?;
        Ok(matches!(t["status"].as_str(), Some("complete" | "failed")).then_some(t))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_pushed_and_pulled_resume_after_a_cut_and_verify() -> Result<()> {
    for backend in backends().await? {
        let fleet = TestFleet::builder()
            .agents(1)
            .backend(backend)
            .configure(|c| c.files.rate_limit_bytes_per_s = RATE_KIB_S * 1024)
            .spawn()
            .await?;
        let org = default_org(&fleet.server).await?.id;
        let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
        let agent = fleet.agents[0].id;
        let data = content(BIG);
        let uploaded = api
            .send_raw(
                reqwest::Method::POST,
                "/api/files?name=big.bin",
                "application/octet-stream",
                data.clone(),
            )
            .await?
            .expect(201)?;
        assert_eq!(uploaded["blake3"], hex_of(&data), "{uploaded}");
        assert_eq!(uploaded["size"], BIG as u64);
        let mut events = connect(&api, false).await?;

        // Push, cut midway.
        let target = fleet.agents[0].data_dir.join("pushed.bin");
        let push = api
            .post(
                &format!("/api/agents/{agent}/files/push"),
                json!({ "blake3": uploaded["blake3"], "path": target.to_str() }),
            )
            .await?
            .expect(202)?;
        let push_id = push["id"].as_str().context("transfer id")?.to_owned();
        let cut_at = cut_midway(&fleet, &mut events, &push_id).await?;
        let pushed = wait_ended(&api, &push_id).await?;
        assert_eq!(pushed["status"], "complete", "{backend:?}: {pushed}");
        assert!(pushed["attempts"].as_i64() >= Some(2), "resumed: {pushed}");
        assert_eq!(pushed["bytes_done"], BIG as u64);
        let on_agent = std::fs::read(&target)?;
        assert!(
            on_agent == data,
            "the pushed file differs ({} bytes)",
            on_agent.len()
        );
        let leftovers: Vec<_> = std::fs::read_dir(&fleet.agents[0].data_dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        assert!(cut_at < BIG as u64, "the cut came midway");

        // Pull it back (another path, so the server's copy is the agent's bytes), cut midway.
        let source = fleet.agents[0].data_dir.join("source.bin");
        std::fs::rename(&target, &source)?;
        let pull = api
            .post(
                &format!("/api/agents/{agent}/files/pull"),
                json!({ "path": source.to_str() }),
            )
            .await?
            .expect(202)?;
        let pull_id = pull["id"].as_str().context("transfer id")?.to_owned();
        cut_midway(&fleet, &mut events, &pull_id).await?;
        let pulled = wait_ended(&api, &pull_id).await?;
        assert_eq!(pulled["status"], "complete", "{backend:?}: {pulled}");
        assert!(pulled["attempts"].as_i64() >= Some(2), "resumed: {pulled}");
        assert_eq!(pulled["blake3"], hex_of(&data));
        assert_eq!(pulled["size"], BIG as u64);

        // The pulled file downloads whole, and in ranges.
        let path = format!("/api/files/{}", hex_of(&data));
        let whole = get_bytes(&api, &path, None).await?;
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.headers()["accept-ranges"], "bytes");
        assert!(whole.bytes().await? == data, "the downloaded file differs");
        let part = get_bytes(&api, &path, Some("bytes=1000-1999")).await?;
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes 1000-1999/{BIG}").as_str()
        );
        assert_eq!(part.bytes().await?, data[1000..2000]);
        let tail = get_bytes(&api, &path, Some("bytes=-10")).await?;
        assert_eq!(tail.bytes().await?, data[BIG - 10..]);
        let past = get_bytes(&api, &path, Some(&format!("bytes={BIG}-"))).await?;
        assert_eq!(past.status(), 416);

        let audit = api.get("/api/audit-logs?limit=100").await?.expect(200)?;
        let actions: Vec<&str> = audit
            .as_array()
            .or_else(|| audit["items"].as_array())
            .context("audit page")?
            .iter()
            .filter_map(|r| r["action"].as_str())
            .collect();
        for action in ["file.upload", "file.push", "file.pull", "file.download"] {
            assert!(actions.contains(&action), "{action} in {actions:?}");
        }
        let completes = actions.iter().filter(|a| **a == "file.complete").count();
        assert_eq!(completes, 2, "{actions:?}");
    }
    Ok(())
}

/// Opens a push or pull channel on the agent's live session with a grant signed by `key`, as
/// the server's transfer task does; returns the channel and the agent's first answer.
async fn open_channel(
    fleet: &TestFleet,
    grant: &FileGrant,
    key: &SigningKey,
) -> Result<(AgentChannel, Wire)> {
    let (grant, signature) = grant.sign(key);
    let channel_id = Uuid::new_v4().into_bytes();
    let router = LocalRouter::new(fleet.server.node().registry.clone());
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = ChannelRequest {
        channel_id,
        opener: Wire::FileOpen(FileOpen {
            channel: channel_id,
            grant,
            signature: signature.to_vec(),
            offset: 0,
        }),
        reply,
    };
    if router.open_channel(fleet.agents[0].id, request) != Delivery::Delivered {
        bail!("the agent has no live session");
    }
    let mut channel = answer.await?.map_err(|e| anyhow!(e))?;
    let first = next_message(&mut channel).await?;
    Ok((channel, first))
}

async fn next_message(channel: &mut AgentChannel) -> Result<Wire> {
    let frame = tokio::time::timeout(WAIT, channel.pipe.from_agent.recv())
        .await?
        .context("the agent closed the channel")?;
    Ok(channel.channel.accept(frame)?)
}

async fn send(channel: &mut AgentChannel, message: Wire) -> Result<()> {
    let frame = channel.channel.seal(message, now_ms() as u64);
    channel.pipe.to_agent.send(frame).await?;
    Ok(())
}

fn refusal(answer: Wire) -> Result<String> {
    match answer {
        Wire::FileAck(FileAck::Failed(why)) => Ok(why),
        other => bail!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_corrupted_chunks_bad_paths_devices_and_forged_grants() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let server_key = fleet.server.node().identity.signing_key.clone();
    let dir = fleet.agents[0].data_dir.clone();
    let data = content(3 * FILE_CHUNK_BYTES + 77);
    let now = now_ms() as u64;
    let push = |path: &str| FileGrant {
        transfer_id: Uuid::new_v4().into_bytes(),
        agent_id: fleet.agents[0].id.into_bytes(),
        direction: FileDirection::Push,
        path: path.into(),
        size: Some(data.len() as u64),
        blake3: Some(*blake3::hash(&data).as_bytes()),
        max_bytes: data.len() as u64,
        rate_limit: 0,
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
    };

    // A corrupted chunk is refused and the agent asks for it again; the good one is taken.
    let target = dir.join("corrupted-then-fixed.bin");
    let (mut channel, ready) =
        open_channel(&fleet, &push(target.to_str().context("path")?), &server_key).await?;
    assert!(
        matches!(ready, Wire::FileReady(r) if r.offset == 0),
        "ready"
    );
    let chunk = |i: usize| {
        let start = i * FILE_CHUNK_BYTES;
        let end = (start + FILE_CHUNK_BYTES).min(data.len());
        FileChunk::new(start as u64, data[start..end].to_vec())
    };
    send(&mut channel, Wire::FileChunk(chunk(0))).await?;
    let mut bad = chunk(1);
    bad.data[100] ^= 0x55;
    send(&mut channel, Wire::FileChunk(bad)).await?;
    match next_message(&mut channel).await? {
        Wire::FileAck(FileAck::Resend { offset, reason }) => {
            assert_eq!(offset, FILE_CHUNK_BYTES as u64);
            assert!(reason.contains("hash"), "{reason}");
        }
        other => bail!("expected a resend, got {other:?}"),
    }
    for i in 1..4 {
        send(&mut channel, Wire::FileChunk(chunk(i))).await?;
    }
    let done = FileDone {
        size: data.len() as u64,
        blake3: *blake3::hash(&data).as_bytes(),
    };
    send(&mut channel, Wire::FileDone(done)).await?;
    match next_message(&mut channel).await? {
        Wire::FileAck(FileAck::Complete { blake3 }) => {
            assert_eq!(blake3, *blake3::hash(&data).as_bytes());
        }
        other => bail!("expected the end, got {other:?}"),
    }
    assert!(std::fs::read(&target)? == data, "the file on the agent");

    // Paths and files that are refused, with why.
    let forged = SigningKey::from_bytes(&[9; 32]);
    let (_, answer) = open_channel(&fleet, &push("/tmp/forged.bin"), &forged).await?;
    assert!(refusal(answer)?.contains("not signed by the pinned server key"));
    let (_, answer) = open_channel(&fleet, &push("/tmp/../etc/cron.d/x"), &server_key).await?;
    assert!(refusal(answer)?.contains(".."));
    let (_, answer) = open_channel(&fleet, &push("/dev/null"), &server_key).await?;
    assert!(refusal(answer)?.contains("character device"));
    let pull = |path: &str| FileGrant {
        direction: FileDirection::Pull,
        size: None,
        blake3: None,
        max_bytes: 1 << 20,
        ..push(path)
    };
    let (_, answer) = open_channel(&fleet, &pull("/dev/zero"), &server_key).await?;
    assert!(refusal(answer)?.contains("character device"));
    let fifo = dir.join("a.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success(), "mkfifo");
    let (_, answer) =
        open_channel(&fleet, &pull(fifo.to_str().context("path")?), &server_key).await?;
    assert!(refusal(answer)?.to_lowercase().contains("fifo"));

    // Through the API: a bad path is a 400 before anything reaches the agent; a device is
    // refused by the agent and the transfer fails with why.
    let org = default_org(&fleet.server).await?.id;
    let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
    let agent = fleet.agents[0].id;
    for path in ["etc/passwd", "/tmp/../etc/shadow"] {
        let reply = api
            .post(
                &format!("/api/agents/{agent}/files/pull"),
                json!({ "path": path }),
            )
            .await?;
        assert_eq!(reply.status, 400, "{path}: {:?}", reply.body);
    }
    let pull = api
        .post(
            &format!("/api/agents/{agent}/files/pull"),
            json!({ "path": "/dev/zero" }),
        )
        .await?
        .expect(202)?;
    let ended = wait_ended(&api, pull["id"].as_str().context("id")?).await?;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        ended["error"]
            .as_str()
            .unwrap_or("")
            .contains("character device"),
        "{ended}"
    );
    // A technician sees transfers but may not push or pull.
    let tech = logged_in(&fleet.server, org, "tech@example.com", "technician").await?;
    assert_eq!(tech.get("/api/transfers").await?.status, 200);
    let reply = tech
        .post(
            &format!("/api/agents/{agent}/files/pull"),
            json!({ "path": "/etc/hostname" }),
        )
        .await?;
    assert_eq!(reply.status, 403);
    Ok(())
}
