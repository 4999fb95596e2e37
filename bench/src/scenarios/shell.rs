//! `shell`: keystroke-to-echo latency of a remote shell on a real `reap3r-agent` process (next
//! to the bench executable), straight to the server and through the impairment relay (`--loss`,
//! `--rtt-ms`, `--jitter-ms`, reordering and duplication as for `lossy`).
//!
//! One keystroke at a time: a character is sent on the shell's WebSocket, and the time until
//! the PTY's echo of that character comes back on the socket is one sample (send → agent →
//! PTY → agent → server → socket). `--keystrokes` samples per leg.

use std::net::SocketAddr;
use std::path::PathBuf;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::*;

/// The agent binary the bench runs: `reap3r-agent` next to the bench executable.
fn agent_bin() -> PathBuf {
    default_server_bin().with_file_name("reap3r-agent")
}

/// A real agent process enrolled through `server_addr`, running until dropped.
pub(super) struct RealAgent {
    pub(super) id: String,
    pub(super) child: tokio::process::Child,
    pub(super) dir: tempfile::TempDir,
}

pub(super) async fn real_agent(
    server: &ServerProcess,
    server_addr: SocketAddr,
) -> Result<RealAgent> {
    let (token, _) = server.create_token(1).await?;
    let dir = tempfile::tempdir()?;
    let out = tokio::process::Command::new(agent_bin())
        .args([
            "enroll",
            "--server",
            &server_addr.to_string(),
            "--token",
            &token.token,
        ])
        .args([
            "--fingerprint",
            &token.fingerprint,
            "--server-key",
            &token.server_key,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("REAP3R_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("running {}", agent_bin().display()))?;
    if !out.status.success() {
        bail!("enrol: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .split_whitespace()
        .nth(2)
        .context("the agent id in the enrol output")?
        .to_owned();
    let child = tokio::process::Command::new(agent_bin())
        .arg("run")
        .arg("--data-dir")
        .arg(dir.path())
        .env("REAP3R_LOG", "warn")
        .env("REAP3R_AGENT_SHELL", "/bin/sh")
        .kill_on_drop(true)
        .spawn()?;
    Ok(RealAgent { id, child, dir })
}

/// Waits (up to a minute) until the agent shows online.
pub(super) async fn wait_online(api: &Api, agent: &RealAgent, leg: &str) -> Result<()> {
    let online = async {
        loop {
            let shown = api.get_json(&format!("/api/agents/{}", agent.id)).await?;
            if shown["status"] == "online" {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), online)
        .await
        .map_err(|_| anyhow!("the agent ({leg}) did not come online"))?
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a shell on `agent` and attaches to it; returns once the shell runs.
async fn attach(http: SocketAddr, api: &Api, token: &str, agent: &str) -> Result<Socket> {
    let session = api
        .post_json(&format!("/api/agents/{agent}/shell"), &json!({}))
        .await?;
    let path = session["ws_path"].as_str().context("ws_path")?;
    let mut req = format!("ws://{http}{path}").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), socket.next())
            .await
            .map_err(|_| anyhow!("the shell did not start"))?;
        match frame {
            Some(Ok(Message::Text(t))) if t.contains("\"started\"") => break,
            Some(Ok(Message::Text(t))) if t.contains("\"ended\"") => bail!("shell ended: {t}"),
            Some(Ok(_)) => {}
            other => bail!("the socket ended: {other:?}"),
        }
    }
    // The shell's prompt and setup output, out of the way.
    socket
        .send(Message::Text(
            json!({"type":"input","data":"echo ready-$((1+1))\n"})
                .to_string()
                .into(),
        ))
        .await?;
    let mut seen = String::new();
    while !seen.contains("ready-2") {
        match tokio::time::timeout_at(deadline.into(), socket.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(_))) => {}
            other => bail!("no prompt: {other:?}"),
        }
    }
    Ok(socket)
}

/// `n` keystrokes, one at a time: the time from sending each to reading its echo, in ms.
async fn keystrokes(socket: &mut Socket, n: usize) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = (b'a' + (i % 26) as u8) as char;
        let sent = Instant::now();
        socket.send(Message::Binary(vec![key as u8].into())).await?;
        let deadline = sent + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline.into(), socket.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) if b.contains(&(key as u8)) => break,
                Ok(Some(Ok(_))) => {}
                other => bail!("no echo of keystroke {i}: {other:?}"),
            }
        }
        samples.push(ms_between(sent, Instant::now()));
    }
    // Done: the session ends (and is recorded) like any other.
    socket
        .send(Message::Text(json!({"type":"close"}).to_string().into()))
        .await?;
    Ok(samples)
}

pub(super) async fn shell(opts: &Options, r: &mut Report) -> Result<()> {
    let n = opts.keystrokes;
    r.param("keystrokes", n);
    r.param("loss", opts.loss);
    r.param("rtt_ms", opts.rtt_ms);
    let server = ServerProcess::start(server_options(opts)).await?;
    let mut api = Api::new(server.http_addr)?;
    log_in(&server, &mut api).await?;
    let token = api.token().context("logged in")?.to_owned();
    let imp = Impairment {
        loss: opts.loss,
        delay: Duration::from_millis(opts.rtt_ms / 2),
        jitter: Duration::from_millis(opts.jitter_ms),
        reorder: opts.reorder,
        duplicate: opts.duplicate,
    };
    let relay = Relay::start(server.quic_addr, imp).await?;
    let legs = [
        ("direct", "straight to the server", server.quic_addr),
        ("impaired", "through the impairment relay", relay.listen),
    ];
    for (key, name, addr) in legs {
        let mut agent = real_agent(&server, addr).await?;
        wait_online(&api, &agent, key).await?;
        let mut socket = attach(server.http_addr, &api, &token, &agent.id).await?;
        let samples = keystrokes(&mut socket, n).await?;
        let summary = Summary::of(samples);
        r.fig(
            &format!("{key}_p50_ms"),
            &format!("keystroke to echo, p50, {name}"),
            summary.p50,
            "ms",
        );
        r.fig(
            &format!("{key}_p99_ms"),
            &format!("keystroke to echo, p99, {name}"),
            summary.p99,
            "ms",
        );
        r.fig(
            &format!("{key}_max_ms"),
            &format!("keystroke to echo, max, {name}"),
            summary.max,
            "ms",
        );
        r.check(
            format!("every keystroke echoed ({key})"),
            summary.count == n,
            format!("{} of {n}", summary.count),
        );
        let _ = agent.child.kill().await;
    }
    finish(r, relay, server).await;
    Ok(())
}

/// Ends a scenario with a real agent: what the relay dropped, the relay, the server.
pub(super) async fn finish(r: &mut Report, relay: Relay, mut server: ServerProcess) {
    let dropped = relay
        .stats
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    let packets = relay
        .stats
        .packets
        .load(std::sync::atomic::Ordering::Relaxed);
    r.note(format!(
        "impaired leg: {dropped} of {packets} packets dropped by the relay"
    ));
    drop(relay);
    let _ = server.terminate(Duration::from_secs(10)).await;
}
