//! Remote shells with real agents over QUIC: a WebSocket client drives the agent's real shell
//! on a PTY (arithmetic, window size, a background job ended with the session), the recording
//! and the audit hold the session, the shell survives a cut of the operator's socket and of the
//! agent's connection, and the agent refuses grants that are forged, expired or not its own.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use reap3r_actors::{AgentCommand, AgentRouter, ChannelRequest, Delivery, LocalRouter};
use reap3r_store::{AgentStatus, Backend, Uuid};
use reap3r_wire::{CloseCode, Message as Wire, ShellGrant, ShellOpen, ShellOpened, SigningKey};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::api_harness::{Api, default_org, logged_in, now_ms};
use crate::api_vault::next_code;
use crate::api_ws::Socket;
use crate::harness::{TestFleet, backends, eventually};
use reap3r_actors::access::totp;

const WAIT: Duration = Duration::from_secs(30);

/// The operator's end of a shell: the socket, and every output byte read so far.
struct Terminal {
    socket: Socket,
    output: String,
}

impl Terminal {
    async fn attach(api: &Api, session: &Value) -> Result<Self> {
        let token = api.bearer.clone().context("client has no token")?;
        let path = session["ws_path"].as_str().context("ws_path")?;
        let mut req =
            format!("{}{path}", api.base.replace("http://", "ws://")).into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Self {
            socket,
            output: String::new(),
        })
    }

    async fn send_json(&mut self, message: Value) -> Result<()> {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await?;
        Ok(())
    }

    async fn type_line(&mut self, line: &str) -> Result<()> {
        self.send_json(json!({ "type": "input", "data": format!("{line}\n") }))
            .await
    }

    /// Reads until a control message of `kind` arrives (output is collected meanwhile).
    async fn event(&mut self, kind: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.next(deadline).await? {
                Some(event) if event["type"] == kind => return Ok(event),
                Some(event) if event["type"] == "ended" => {
                    bail!("the session ended waiting for {kind}: {event}")
                }
                _ => {}
            }
        }
    }

    /// Reads until the output holds `needle` (after the output seen before the call).
    async fn expect_output(&mut self, needle: &str) -> Result<String> {
        let from = self.output.len();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self.output[from..].find(needle) {
                return Ok(self.output[from + at..].to_owned());
            }
            if let Some(event) = self.next(deadline).await?
                && event["type"] == "ended"
            {
                bail!(
                    "the session ended waiting for {needle:?}: {event}; output: {}",
                    self.output
                );
            }
        }
    }

    /// One frame: output is appended (and `None` returned), a control message returned.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Result<Option<Value>> {
        let frame = tokio::time::timeout_at(deadline, self.socket.next())
            .await
            .map_err(|_| anyhow!("timed out; output so far: {:?}", self.output))?;
        match frame {
            Some(Ok(Message::Binary(bytes))) => {
                self.output.push_str(&String::from_utf8_lossy(&bytes));
                Ok(None)
            }
            Some(Ok(Message::Text(text))) => Ok(Some(serde_json::from_str(&text)?)),
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => bail!("socket error: {e}"),
            None => bail!("the socket closed; output: {:?}", self.output),
        }
    }
}

/// The first `<marker><digits>` followed by a line end in `text`.
fn number_after(text: &str, marker: &str) -> Option<u32> {
    text.match_indices(marker).find_map(|(i, _)| {
        let rest = &text[i + marker.len()..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = rest[digits..].chars().next();
        (digits > 0 && matches!(after, Some('\r' | '\n')))
            .then(|| rest[..digits].parse().ok())
            .flatten()
    })
}

/// Whether `pid` runs (and is not a zombie).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

async fn open(api: &Api, agent: Uuid, body: Value) -> Result<Value> {
    api.post(&format!("/api/agents/{agent}/shell"), body)
        .await?
        .expect(201)
}

/// The message of an error reply, after checking its status.
fn refusal(reply: crate::api_harness::Reply, status: u16) -> Result<String> {
    let body = reply.expect(status)?;
    body["message"]
        .as_str()
        .map(str::to_owned)
        .context("error without a message")
}

/// The recording of `session`, unpacked: one JSON value per line.
async fn recording(api: &Api, session: &str) -> Result<Vec<Value>> {
    let token = api.bearer.clone().context("client has no token")?;
    let reply = reqwest::Client::new()
        .get(format!(
            "{}/api/shell/sessions/{session}/recording",
            api.base
        ))
        .bearer_auth(token)
        .send()
        .await?;
    if reply.status() != 200 {
        bail!("recording: {} {}", reply.status(), reply.text().await?);
    }
    assert_eq!(
        reply
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/octet-stream")
    );
    let gzip = reply.bytes().await?.to_vec();
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(gzip.as_slice()).read_to_string(&mut text)?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(Into::into))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_drives_a_real_shell_and_the_recording_and_audit_hold_it() -> Result<()> {
    for backend in backends().await? {
        let fleet = TestFleet::builder()
            .agents(1)
            .backend(backend)
            .spawn()
            .await?;
        let org = default_org(&fleet.server).await?.id;
        let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
        let agent = fleet.agents[0].id;

        let session = open(&api, agent, json!({ "cols": 80, "rows": 24 })).await?;
        assert_eq!(session["status"], "pending", "[{backend}] {session}");
        let id = session["id"].as_str().context("id")?.to_owned();
        let mut term = Terminal::attach(&api, &session).await?;
        let started = term.event("started").await?;
        assert!(started["pid"].as_u64().is_some_and(|p| p > 1), "{started}");

        // The shell computes: the echo of the typed line holds no 42, the answer does.
        term.type_line("echo $((6*7))").await?;
        term.expect_output("42\r\n").await?;
        // A resize reaches the terminal (stty reads it from the PTY).
        term.send_json(json!({ "type": "resize", "cols": 132, "rows": 50 }))
            .await?;
        term.type_line("stty size").await?;
        term.expect_output("50 132").await?;
        // Raw bytes work as keystrokes too (xterm.js sends binary).
        term.socket
            .send(Message::Binary(b"echo raw$((1+1))\n".to_vec().into()))
            .await?;
        term.expect_output("raw2").await?;
        // A background job, which job control puts in a process group of its own.
        term.type_line("sleep 300 & echo bg=$!").await?;
        let pid = loop {
            if let Some(pid) = number_after(&term.output, "bg=") {
                break pid;
            }
            term.expect_output("bg=").await?;
        };
        assert!(is_running(pid), "[{backend}] sleep {pid} runs");
        // A bad control message gets an error and changes nothing.
        term.send_json(json!({ "type": "resize", "cols": 0, "rows": 5 }))
            .await?;
        let error = term.event("error").await?;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("cols")),
            "{error}"
        );

        // Closing the socket ends the session and every process of the shell's session; the
        // close is answered once the end is recorded.
        term.socket.send(Message::Close(None)).await?;
        let answer = tokio::time::timeout(WAIT, async {
            loop {
                match term.socket.next().await {
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(anyhow!("the close was not answered: {e}")),
                }
            }
        })
        .await?;
        answer?;
        eventually("the background job to be killed", WAIT, || async {
            Ok((!is_running(pid)).then_some(()))
        })
        .await?;

        let shown = api
            .get(&format!("/api/shell/sessions/{id}"))
            .await?
            .expect(200)?;
        assert_eq!(shown["status"], "ended", "[{backend}] {shown}");
        assert_eq!(shown["end_reason"], "closed by the operator", "{shown}");
        assert!(
            shown["bytes_in"].as_i64().is_some_and(|n| n > 30),
            "{shown}"
        );
        assert!(
            shown["bytes_out"].as_i64().is_some_and(|n| n > 30),
            "{shown}"
        );
        assert!(
            shown["recording_stored_bytes"]
                .as_i64()
                .is_some_and(|n| n > 0),
            "{shown}"
        );

        // The recording: an asciicast v2 header, the output, the resize.
        let cast = recording(&api, &id).await?;
        assert_eq!(cast[0]["version"], 2, "{:?}", cast[0]);
        assert_eq!(cast[0]["width"], 80);
        assert_eq!(cast[0]["height"], 24);
        let output: String = cast[1..]
            .iter()
            .filter(|e| e[1] == "o")
            .filter_map(|e| e[2].as_str())
            .collect();
        assert!(output.contains("42\r\n"), "[{backend}] {output}");
        assert!(output.contains("50 132"), "[{backend}] {output}");
        assert!(
            cast.iter().any(|e| e[1] == "r" && e[2] == "132x50"),
            "[{backend}] the resize is recorded"
        );
        let times: Vec<f64> = cast[1..].iter().filter_map(|e| e[0].as_f64()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

        // Open and close are audited, the close with its byte counts.
        let audit = api
            .get("/api/audit-logs?action=shell.close")
            .await?
            .expect(200)?;
        let close = &audit[0];
        assert_eq!(close["target"], format!("shell:{id}"), "{audit}");
        let details = close["details"].to_string();
        assert!(
            details.contains("bytes_in") && details.contains("closed by the operator"),
            "{details}"
        );
        let opened = api
            .get("/api/audit-logs?action=shell.open")
            .await?
            .expect(200)?;
        assert_eq!(opened.as_array().map(Vec::len), Some(1), "{opened}");
        let read = api
            .get("/api/audit-logs?action=shell.recording_read")
            .await?
            .expect(200)?;
        assert_eq!(read.as_array().map(Vec::len), Some(1), "{read}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_survives_a_cut_socket_and_a_cut_agent_connection() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
    let agent = fleet.agents[0].id;
    let session = open(&api, agent, json!({})).await?;
    let mut term = Terminal::attach(&api, &session).await?;
    term.event("started").await?;
    term.type_line("KEPT=state$((40+2))").await?;
    term.type_line("echo set-$KEPT").await?;
    term.expect_output("set-state42").await?;

    // The socket drops without a close frame (a browser tab reloading): the shell waits.
    drop(term);
    let mut term = Terminal::attach(&api, &session).await?;
    term.event("started").await?;
    // The screen so far is shown again, then the shell carries on.
    term.expect_output("set-state42").await?;
    term.type_line("echo again-$KEPT").await?;
    term.expect_output("again-state42").await?;

    // The agent's connection is cut: the server closes it, the agent reconnects, the shell
    // (kept running by the agent) is reattached.
    let router = LocalRouter::new(fleet.server.node().registry.clone());
    assert_eq!(
        router.deliver(
            agent,
            AgentCommand::Kick {
                code: CloseCode::Internal,
                reason: "test cuts the link".into(),
            },
        ),
        Delivery::Delivered
    );
    term.event("agent_lost").await?;
    term.event("resumed").await?;
    term.type_line("echo after-$KEPT").await?;
    term.expect_output("after-state42").await?;
    let shown = api
        .get(&format!(
            "/api/shell/sessions/{}",
            session["id"].as_str().unwrap_or_default()
        ))
        .await?
        .expect(200)?;
    assert_eq!(shown["status"], "active", "{shown}");
    // A `close` message ends it and is answered with the outcome.
    term.send_json(json!({ "type": "close" })).await?;
    let ended = term.event("ended").await?;
    assert_eq!(ended["reason"], "closed by the operator", "{ended}");
    Ok(())
}

/// Asks the agent's live session to open a shell channel with `open` (sealed by the session
/// with the real server key, as every opener is), and returns the agent's answer.
async fn agent_answer(fleet: &TestFleet, agent: Uuid, open: ShellOpen) -> Result<ShellOpened> {
    let router = LocalRouter::new(fleet.server.node().registry.clone());
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = ChannelRequest {
        channel_id: open.channel,
        opener: Wire::ShellOpen(open),
        reply,
    };
    if router.open_channel(agent, request) != Delivery::Delivered {
        bail!("the agent has no live session");
    }
    let mut channel = answer.await?.map_err(|e| anyhow!(e))?;
    let frame = tokio::time::timeout(WAIT, channel.pipe.from_agent.recv())
        .await?
        .context("the agent closed the channel without an answer")?;
    match channel.channel.accept(frame)? {
        Wire::ShellAck(ack) => Ok(ack.outcome),
        other => bail!("expected an ack, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_forged_expired_and_foreign_shell_grants() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(2)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let agent = fleet.agents[0].id;
    let server_key = fleet.server.node().identity.signing_key.clone();
    let now = crate::api_harness::now_ms() as u64;
    let grant = |agent_id: Uuid, expires_at_ms: u64| ShellGrant {
        session_id: Uuid::new_v4().into_bytes(),
        agent_id: agent_id.into_bytes(),
        operator: "user:test".into(),
        issued_at_ms: now,
        expires_at_ms,
        max_duration_s: 60,
        idle_timeout_s: 60,
        reattach_grace_s: 60,
        cols: 80,
        rows: 24,
    };
    let open = |grant: &ShellGrant, key: &SigningKey| {
        let (grant, signature) = grant.sign(key);
        ShellOpen {
            channel: Uuid::new_v4().into_bytes(),
            grant,
            signature: signature.to_vec(),
            resume_from: None,
        }
    };
    let refused = |outcome: ShellOpened| match outcome {
        ShellOpened::Refused(why) => Ok(why),
        other => Err(anyhow!("expected a refusal, got {other:?}")),
    };

    // Signed with a key that is not the pinned server key (what a database alone can make).
    let forged = open(
        &grant(agent, now + 60_000),
        &SigningKey::from_bytes(&[9; 32]),
    );
    let why = refused(agent_answer(&fleet, agent, forged).await?)?;
    assert!(why.contains("not signed by the pinned server key"), "{why}");
    // Expired, beyond the allowed clock skew.
    let expired = open(&grant(agent, now - 10 * 60_000), &server_key);
    let why = refused(agent_answer(&fleet, agent, expired).await?)?;
    assert!(why.contains("expired"), "{why}");
    // Granted to the other agent.
    let foreign = open(&grant(fleet.agents[1].id, now + 60_000), &server_key);
    let why = refused(agent_answer(&fleet, agent, foreign).await?)?;
    assert!(why.contains("another agent"), "{why}");
    // A reattach to a session the agent does not have.
    let mut resume = open(&grant(agent, now + 60_000), &server_key);
    resume.resume_from = Some(0);
    let why = refused(agent_answer(&fleet, agent, resume).await?)?;
    assert!(why.contains("no such shell session"), "{why}");
    // The genuine grant starts a shell; the same grant cannot start a second one.
    let genuine = open(&grant(agent, now + 60_000), &server_key);
    let mut again = genuine.clone();
    again.channel = Uuid::new_v4().into_bytes();
    assert!(matches!(
        agent_answer(&fleet, agent, genuine).await?,
        ShellOpened::Started { .. }
    ));
    let why = refused(agent_answer(&fleet, agent, again).await?)?;
    assert!(why.contains("already started"), "{why}");
    // The refusals cost the agent nothing: it is still online.
    fleet
        .server
        .wait_status(agent, AgentStatus::Online, WAIT)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_requests_that_are_not_allowed_get_clear_refusals() -> Result<()> {
    let mut fleet = TestFleet::builder()
        .agents(2)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let admin = logged_in(&fleet.server, org, "admin@example.com", "org_admin").await?;
    let other = logged_in(&fleet.server, org, "other@example.com", "org_admin").await?;
    let tech = logged_in(&fleet.server, org, "tech@example.com", "technician").await?;
    let (agent, offline) = (fleet.agents[0].id, fleet.agents[1].id);

    // Technicians do not open shells by default, and do not see sessions.
    let why = refusal(
        tech.post(&format!("/api/agents/{agent}/shell"), json!({}))
            .await?,
        403,
    )?;
    assert!(why.contains("shell:open"), "{why}");
    tech.get("/api/shell/sessions").await?.error(403)?;
    // Bad sizes, unknown agents, offline agents.
    admin
        .post(&format!("/api/agents/{agent}/shell"), json!({ "cols": 0 }))
        .await?
        .error(400)?;
    admin
        .post(&format!("/api/agents/{}/shell", Uuid::new_v4()), json!({}))
        .await?
        .error(404)?;
    fleet.agents[1].kill().await?;
    fleet
        .server
        .wait_status(offline, AgentStatus::Offline, WAIT)
        .await?;
    let why = refusal(
        admin
            .post(&format!("/api/agents/{offline}/shell"), json!({}))
            .await?,
        409,
    )?;
    assert!(why.contains("not online"), "{why}");

    // At most two open sessions per agent (the default).
    let first = open(&admin, agent, json!({})).await?;
    open(&admin, agent, json!({})).await?;
    let why = refusal(
        admin
            .post(&format!("/api/agents/{agent}/shell"), json!({}))
            .await?,
        409,
    )?;
    assert!(why.contains("at most 2"), "{why}");

    // No such session: 404 for it and for its recording.
    let unknown = Uuid::new_v4();
    admin
        .get(&format!("/api/shell/sessions/{unknown}"))
        .await?
        .error(404)?;
    admin
        .get(&format!("/api/shell/sessions/{unknown}/recording"))
        .await?
        .error(404)?;
    // A socket message over the cap is answered with an error and changes nothing.
    let mut term = Terminal::attach(&admin, &first).await?;
    term.event("started").await?;
    term.socket
        .send(Message::Binary(vec![b'x'; 70 * 1024].into()))
        .await?;
    let error = term.event("error").await?;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most")),
        "{error}"
    );
    drop(term);

    // Only the operator who opened a session attaches to it.
    let path = first["ws_path"].as_str().context("ws_path")?;
    let token = other.bearer.clone().context("token")?;
    let url = format!(
        "{}{path}?access_token={token}",
        other.base.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => bail!("expected 403, got {:?}", other.map(|_| ())),
    }
    // Without a credential, no socket at all.
    let anonymous = format!("{}{path}", admin.base.replace("http://", "ws://"));
    match tokio_tungstenite::connect_async(anonymous).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => bail!("expected 401, got {:?}", other.map(|_| ())),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_with_mfa_step_up_before_opening_a_shell() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let admin = logged_in(&fleet.server, org, "mfa-admin@example.com", "org_admin").await?;
    let agent = fleet.agents[0].id;
    let setup = admin
        .post("/api/auth/mfa/setup", json!({}))
        .await?
        .expect(200)?;
    let secret = setup["secret"].as_str().unwrap_or_default().to_owned();
    admin
        .post(
            "/api/auth/mfa/enable",
            json!({ "code": totp::code_at(&secret, now_ms())? }),
        )
        .await?
        .expect(200)?;
    let refused = admin
        .post(&format!("/api/agents/{agent}/shell"), json!({}))
        .await?
        .error(403)?;
    assert_eq!(refused, "step_up_required");
    let code = next_code(&secret).await?;
    admin
        .post("/api/auth/step-up", json!({ "code": code }))
        .await?
        .expect(200)?;
    let session = open(&admin, agent, json!({})).await?;
    let mut term = Terminal::attach(&admin, &session).await?;
    term.event("started").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutdown_ends_open_shells_and_their_processes() -> Result<()> {
    let mut fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
    let session = open(&api, fleet.agents[0].id, json!({})).await?;
    let id: Uuid = session["id"].as_str().context("id")?.parse()?;
    let mut term = Terminal::attach(&api, &session).await?;
    let pid = term.event("started").await?["pid"]
        .as_u64()
        .context("pid")? as u32;
    term.type_line("echo up-$((2+3))").await?;
    term.expect_output("up-5").await?;
    assert!(is_running(pid));

    fleet.server.restart().await?;
    let ended = fleet
        .server
        .node()
        .store
        .shell_session(org, id)
        .await?
        .context("the session")?;
    assert_eq!(
        ended.end_reason.as_deref(),
        Some("the server is shutting down"),
        "{ended:?}"
    );
    eventually("the shell to be ended by its agent", WAIT, || async {
        Ok((!is_running(pid)).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_ends_a_shell_whose_program_does_not_read_its_input() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
    let session = open(&api, fleet.agents[0].id, json!({})).await?;
    let id: Uuid = session["id"].as_str().context("id")?.parse()?;
    let mut term = Terminal::attach(&api, &session).await?;
    let pid = term.event("started").await?["pid"]
        .as_u64()
        .context("pid")? as u32;
    // A program that never reads its terminal, then a paste far larger than the terminal's
    // input buffer: the keystrokes back up on the agent.
    term.type_line("sleep 600").await?;
    let paste = "x".repeat(60 * 1024);
    for _ in 0..8 {
        term.socket
            .send(Message::Binary(paste.clone().into_bytes().into()))
            .await?;
    }
    // The close is still heard: the session ends and the shell with it.
    term.send_json(json!({ "type": "close" })).await?;
    let ended = term.event("ended").await?;
    assert_eq!(ended["reason"], "closed by the operator", "{ended}");
    eventually("the shell to end", WAIT, || async {
        Ok((!is_running(pid)).then_some(()))
    })
    .await?;
    let shown = fleet
        .server
        .node()
        .store
        .shell_session(org, id)
        .await?
        .context("the session")?;
    assert_eq!(shown.end_reason.as_deref(), Some("closed by the operator"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_login_session_that_opened_a_shell_attaches_to_it() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let api = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
    let session = open(&api, fleet.agents[0].id, json!({})).await?;
    // The same user, logged in a second time (another device, or a stolen token without the
    // first session's step-up): refused.
    let (second, _) = api
        .login("ops@example.com", crate::api_harness::PASSWORD)
        .await?;
    let path = session["ws_path"].as_str().context("ws_path")?;
    let token = second.bearer.clone().context("token")?;
    let url = format!(
        "{}{path}?access_token={token}",
        second.base.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => bail!("expected 403, got {:?}", other.map(|_| ())),
    }
    // The session that opened it still can.
    let mut term = Terminal::attach(&api, &session).await?;
    term.event("started").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_opened_with_an_api_key_ends_when_the_key_is_deleted() -> Result<()> {
    let fleet = TestFleet::builder()
        .agents(1)
        .backend(Backend::Sqlite)
        .spawn()
        .await?;
    let org = default_org(&fleet.server).await?.id;
    let admin = logged_in(&fleet.server, org, "ops@example.com", "org_admin").await?;
    let key = admin
        .post(
            "/api/api-keys",
            json!({ "name": "shell-script", "scopes": ["shell:open", "shell:view"] }),
        )
        .await?
        .expect(200)?;
    let secret = key["secret"].as_str().context("secret")?;
    let script = admin.anonymous().with_api_key(secret);
    let session = open(&script, fleet.agents[0].id, json!({})).await?;
    let id: Uuid = session["id"].as_str().context("id")?.parse()?;
    let path = session["ws_path"].as_str().context("ws_path")?;
    let mut req =
        format!("{}{path}", script.base.replace("http://", "ws://")).into_client_request()?;
    req.headers_mut().insert("x-api-key", secret.parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(req).await?;
    let mut term = Terminal {
        socket,
        output: String::new(),
    };
    term.event("started").await?;
    // The key is deleted: at its next check (every 15 s) the socket's credential no longer
    // holds, and the session ends.
    let key_id = key["key"]["id"].as_str().context("key id")?;
    admin
        .delete(&format!("/api/api-keys/{key_id}"))
        .await?
        .expect(200)?;
    eventually(
        "the session to end with its key",
        Duration::from_secs(40),
        || async {
            let s = fleet.server.node().store.shell_session(org, id).await?;
            Ok(s.filter(|s| s.ended_at.is_some()).map(|_| ()))
        },
    )
    .await?;
    Ok(())
}
