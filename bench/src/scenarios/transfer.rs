//! `transfer`: file push and pull throughput to a real `reap3r-agent` process (next to the
//! bench executable), and the server's CPU per MB, straight to the server and through the
//! impairment relay (`--loss`, `--rtt-ms`, `--jitter-ms`, reordering and duplication as for
//! `lossy`).
//!
//! Per leg: a `--file-mb` file is uploaded, pushed to the agent (timed from the push's POST
//! until the transfer is complete), then pulled back from the agent (likewise); the pulled
//! file's BLAKE3 must be the uploaded one's.

use super::shell::{finish, real_agent, wait_online};
use super::*;

/// How often a transfer's state is polled.
const POLL: Duration = Duration::from_millis(20);
const TRANSFER_DEADLINE: Duration = Duration::from_secs(600);

/// The file: bytes that do not repeat at the chunk size and do not compress.
fn content(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = *blake3::hash(b"reap3r-bench transfer").as_bytes();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = *blake3::hash(&block).as_bytes();
    }
    out.truncate(len);
    out
}

/// One timed transfer: its seconds and the server CPU it cost, or why it failed.
async fn timed(
    api: &Api,
    server: &ServerProcess,
    path: &str,
    body: &Value,
) -> Result<(f64, Option<f64>, Value)> {
    let cpu0 = server.cpu_seconds();
    let started = Instant::now();
    let transfer = api.create(path, body).await?;
    let ended = loop {
        let t = api.get_json(&format!("/api/transfers/{transfer}")).await?;
        match t["status"].as_str() {
            Some("complete") => break t,
            Some("failed") => bail!("transfer failed: {t}"),
            _ => {}
        }
        if started.elapsed() > TRANSFER_DEADLINE {
            bail!("transfer not done after {TRANSFER_DEADLINE:?}: {t}");
        }
        tokio::time::sleep(POLL).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, server.cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok((secs, cpu, ended))
}

pub(super) async fn transfer(opts: &Options, r: &mut Report) -> Result<()> {
    let mb = opts.file_mb;
    r.param("file_mb", mb);
    r.param("loss", opts.loss);
    r.param("rtt_ms", opts.rtt_ms);
    r.param("jitter_ms", opts.jitter_ms);
    let server = ServerProcess::start(server_options(opts)).await?;
    let mut api = Api::new(server.http_addr)?;
    log_in(&server, &mut api).await?;
    let data = content(mb * 1024 * 1024);
    let hash = blake3::hash(&data).to_hex().to_string();
    let uploaded = api.post_bytes("/api/files?name=bench.bin", data).await?;
    r.check(
        "the upload is stored under its BLAKE3",
        uploaded["blake3"] == hash.as_str(),
        format!("{}", uploaded["blake3"]),
    );
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
        let target = agent.dir.path().join("pushed.bin");
        let target = target.to_str().context("a UTF-8 path")?.to_owned();
        let push = json!({ "blake3": hash, "path": target });
        let (push_s, push_cpu, pushed) = timed(
            &api,
            &server,
            &format!("/api/agents/{}/files/push", agent.id),
            &push,
        )
        .await?;
        let pull = json!({ "path": target });
        let (pull_s, pull_cpu, pulled) = timed(
            &api,
            &server,
            &format!("/api/agents/{}/files/pull", agent.id),
            &pull,
        )
        .await?;
        for (what, secs, cpu, t) in [
            ("push", push_s, push_cpu, &pushed),
            ("pull", pull_s, pull_cpu, &pulled),
        ] {
            r.fig(
                &format!("{key}_{what}_mb_s"),
                &format!("{what} throughput, {name}"),
                mb as f64 / secs,
                "MB/s",
            );
            if let Some(cpu) = cpu {
                r.fig(
                    &format!("{key}_{what}_cpu_ms_per_mb"),
                    &format!("server CPU per MB, {what}, {name}"),
                    cpu * 1000.0 / mb as f64,
                    "ms/MB",
                );
            }
            r.note(format!(
                "{key} {what}: {secs:.2} s, {} attempt(s)",
                t["attempts"]
            ));
        }
        r.check(
            format!("the pulled file is the pushed one ({key})"),
            pulled["blake3"] == hash.as_str(),
            format!("{}", pulled["blake3"]),
        );
        let _ = agent.child.kill().await;
    }
    finish(r, relay, server).await;
    Ok(())
}
