//! The scenarios. Each starts its own server (unless pointed at a running one), enrols and
//! connects a simulated fleet, measures, checks correctness, and judges the design targets.
//! This module has what they share (the bed, waiting for the fleet, common checks); each
//! scenario has its own file: [`connect`], [`steady`], [`fanout`] (also lossy), [`storm`],
//! [`alerting`] (with [`storage`]), [`shell`] (a real agent's remote shell), [`transfer`] (file
//! pushes and pulls to a real agent).

mod alerting;
mod connect;
mod fanout;
mod shell;
mod steady;
mod storage;
mod storm;
mod transfer;

use alerting::alerting;
use connect::connect;
use fanout::fanout;
use shell::shell;
use steady::steady;
use storm::storm;
use transfer::transfer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::http::{Api, find_number};
use crate::load::{self, Observer, Sent, cohort_latencies, value_at};
use crate::nats;
use crate::proxy::{Impairment, Relay, RelayStats};
use crate::report::{Report, Verdict};
use crate::server::{
    External, Profiler, ServerOptions, ServerProcess, default_server_bin, self_cpu_seconds,
};
use crate::sim::{Endpoints, Fleet, FleetConfig, Identity, Lane, Outgoing, SimAgent, enrol_all};
use crate::stats::{Rng, Summary, ms_between};
use crate::transport::{Pins, send_on_uni};
use crate::{Options, Peer, Scenario};

/// Targets from DESIGN.md "Performance targets".
const TARGET_AGENTS: usize = 100_000;
const TARGET_RSS_PER_AGENT: f64 = 48.0 * 1024.0;
const TARGET_HEARTBEATS: f64 = 30_000.0;
const TARGET_FANOUT_N: usize = 10_000;
const TARGET_FANOUT_P99_MS: f64 = 1000.0;
const TARGET_FANOUT_RATIO: f64 = 1.5;
const TARGET_STORM_N: usize = 10_000;
const TARGET_STORM_S: f64 = 10.0;
/// Sizes for the nats peer, close to ours: a signed job dispatch, and the agent's three
/// answer frames (ack, started, result); a signed heartbeat envelope.
const PEER_REQUEST_BYTES: usize = 320;
const PEER_REPLY_BYTES: usize = 340;
const PEER_HEARTBEAT_BYTES: usize = 138;

/// Creates an org admin with the CLI (a fresh one per run, so kept data dirs work) and logs in.
async fn log_in(server: &ServerProcess, api: &mut Api) -> Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("bench-{}@reap3r-bench.invalid", &id[..12]);
    let password = hex::encode(uuid::Uuid::new_v4().as_bytes());
    server.create_user(&email, "org_admin", &password).await?;
    api.login(&email, &password).await
}

/// Runs the scenario the options name.
pub async fn run(opts: &Options) -> Result<Report> {
    if opts.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if opts.peer == Some(Peer::Nats) {
        if !matches!(opts.scenario, Scenario::Fanout | Scenario::Steady) {
            bail!("--peer nats applies to the fanout and steady scenarios");
        }
        nats::probe(&opts.nats_url).await.map_err(|e| {
            anyhow!(
                "--peer nats: no nats-server reachable at {} ({e}); install and start one \
                 (Debian: apt-get install nats-server; nats-server -a 127.0.0.1 -p 4222) or drop --peer",
                opts.nats_url
            )
        })?;
    }
    let mut report = Report::new(opts.scenario.name(), opts.agents);
    report.param("agents_per_endpoint", opts.agents_per_endpoint);
    report.param("heartbeat_interval_s", opts.heartbeat_interval_s);
    let result = match opts.scenario {
        Scenario::Connect => connect(opts, &mut report).await,
        Scenario::Steady => steady(opts, &mut report).await,
        Scenario::Fanout => fanout(opts, &mut report, None).await,
        Scenario::Storm => storm(opts, &mut report).await,
        Scenario::Alerting => alerting(opts, &mut report).await,
        Scenario::Shell => shell(opts, &mut report).await,
        Scenario::Transfer => transfer(opts, &mut report).await,
        Scenario::Lossy => {
            let imp = Impairment {
                loss: opts.loss,
                delay: Duration::from_millis(opts.rtt_ms) / 2,
                jitter: Duration::from_millis(opts.jitter_ms),
                reorder: opts.reorder,
                duplicate: opts.duplicate,
            };
            fanout(opts, &mut report, Some(imp)).await
        }
    };
    result.map(|()| report)
}

fn server_options(opts: &Options) -> ServerOptions {
    ServerOptions {
        bin: opts.server_bin.clone().unwrap_or_else(default_server_bin),
        heartbeat_interval_s: opts.heartbeat_interval_s,
        max_handshakes: opts.max_handshakes,
        shutdown_grace_s: opts.shutdown_grace_s,
        log: opts.server_log.clone(),
        data_dir: opts.data_dir.clone(),
        env: opts
            .database_url
            .iter()
            .map(|url| ("REAP3R_DATABASE_URL".to_string(), url.clone()))
            .collect(),
        external: opts.quic_addr.map(|quic_addr| External {
            quic_addr,
            http_addr: opts
                .http_addr
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
            pid: opts.server_pid,
        }),
    }
}

fn fleet_config(opts: &Options) -> FleetConfig {
    FleetConfig {
        agents_per_endpoint: opts.agents_per_endpoint,
        ramp: opts.ramp,
        // The real agent's connect deadline (dial → welcome).
        handshake_timeout: Duration::from_secs(15),
        base_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_millis(opts.max_backoff_ms.max(500)),
        idle_timeout: Duration::from_secs(u64::from(opts.heartbeat_interval_s) * 3 + 10),
        metrics: !opts.no_metrics,
    }
}

/// A server with N enrolled (not yet connected) identities.
struct Bed {
    server: ServerProcess,
    api: Api,
    pins: Pins,
    ids: Vec<Identity>,
}

/// Identities enrolled in a kept data dir (`--data-dir`), reused by later runs against it.
const FLEET_FILE: &str = "bench-fleet.txt";

fn load_fleet(path: &std::path::Path, n: usize) -> Option<Vec<Identity>> {
    let text = std::fs::read_to_string(path).ok()?;
    let ids: Vec<Identity> = text
        .lines()
        .filter_map(|line| {
            let (id, seed) = line.split_once(' ')?;
            let id: [u8; 16] = hex::decode(id).ok()?.try_into().ok()?;
            let seed: [u8; 32] = hex::decode(seed).ok()?.try_into().ok()?;
            Some(Identity {
                id,
                key: reap3r_wire::SigningKey::from_bytes(&seed),
            })
        })
        .take(n)
        .collect();
    (ids.len() == n).then_some(ids)
}

fn save_fleet(path: &std::path::Path, ids: &[Identity]) -> Result<()> {
    let text: String = ids
        .iter()
        .map(|i| format!("{} {}\n", hex::encode(i.id), hex::encode(i.key.to_bytes())))
        .collect();
    std::fs::write(path, text)?;
    Ok(())
}

async fn prepare(opts: &Options, r: &mut Report) -> Result<Bed> {
    prepare_with(opts, r, server_options(opts)).await
}

/// [`prepare`] with a server configured beyond the common options.
async fn prepare_with(opts: &Options, r: &mut Report, server: ServerOptions) -> Result<Bed> {
    let server = ServerProcess::start(server).await?;
    let api = Api::new(server.http_addr)?;
    let fleet_file = opts.data_dir.as_ref().map(|d| d.join(FLEET_FILE));
    if let Some(ids) = fleet_file
        .as_deref()
        .and_then(|f| load_fleet(f, opts.agents))
    {
        let (_, pins) = server.create_token(1).await?;
        r.note(format!(
            "reused {} agents enrolled earlier in {}",
            ids.len(),
            server.data_dir.display()
        ));
        return Ok(Bed {
            server,
            api,
            pins,
            ids,
        });
    }
    let (token, pins) = server.create_token(opts.agents).await?;
    let start = Instant::now();
    let ids = enrol_all(
        server.quic_addr,
        &pins,
        &token.token,
        opts.agents,
        opts.enrol_concurrency,
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    r.fig("enrol_s", "enrolment of all agents", secs, "s");
    r.fig(
        "enrol_rate",
        "enrolments per second",
        opts.agents as f64 / secs,
        "/s",
    );
    if let Some(f) = &fleet_file {
        save_fleet(f, &ids).with_context(|| format!("saving {}", f.display()))?;
    }
    Ok(Bed {
        server,
        api,
        pins,
        ids,
    })
}

fn direct_endpoints(opts: &Options, server: &ServerProcess) -> Result<Endpoints> {
    let count = Endpoints::count(opts.agents, opts.agents_per_endpoint);
    Endpoints::new(vec![server.quic_addr; count], opts.agents_per_endpoint)
}

#[derive(Debug, Default)]
struct Online {
    /// When the server's `reap3r_agents_connected` gauge reached N, ms after the start.
    server_ms: Option<f64>,
    /// When the last simulated agent got its `Welcome`, ms after the start.
    sim_ms: Option<f64>,
    server_count: usize,
    sim_count: usize,
}

/// Waits until the server reports N connected agents and every simulated agent was welcomed at
/// or after `since_us` (fleet clock), or `timeout`.
async fn wait_online(
    api: &Api,
    fleet: &Fleet,
    since_us: u64,
    start: Instant,
    timeout: Duration,
) -> Online {
    let n = fleet.len();
    let mut online = Online::default();
    let deadline = start + timeout;
    loop {
        if online.server_ms.is_none()
            && let Ok(v) = api.metric("reap3r_agents_connected").await
        {
            online.server_count = v as usize;
            if online.server_count >= n {
                online.server_ms = Some(ms_between(start, Instant::now()));
            }
        }
        if online.sim_ms.is_none()
            && let Some(last) = fleet.last_welcome_since(since_us)
        {
            online.sim_ms = Some(last.saturating_sub(since_us) as f64 / 1000.0);
        }
        if (online.server_ms.is_some() && online.sim_ms.is_some()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    online.sim_count = fleet.welcomed_since(since_us);
    online
}

/// Starts a fleet of `ids` on `endpoints` and waits until it is online (see [`wait_online`]);
/// `start` is where the online figures count from.
async fn start_fleet(
    opts: &Options,
    (ids, pins): (&[Identity], &Pins),
    api: &Api,
    endpoints: Endpoints,
    start: Instant,
) -> Result<(Fleet, Online)> {
    let fleet = Fleet::start(ids.to_vec(), endpoints, pins.clone(), fleet_config(opts))?;
    let online = wait_online(api, &fleet, 0, start, Duration::from_secs(opts.timeout_s)).await;
    Ok((fleet, online))
}

fn online_checks(r: &mut Report, online: &Online, n: usize, what: &str) -> bool {
    r.check(
        format!("server sees all agents {what}"),
        online.server_ms.is_some(),
        format!(
            "reap3r_agents_connected {} of {n}",
            if online.server_ms.is_some() {
                n
            } else {
                online.server_count
            }
        ),
    );
    r.check(
        format!("every simulated agent welcomed {what}"),
        online.sim_ms.is_some(),
        format!("{} of {n}", online.sim_count),
    );
    online.server_ms.is_some() && online.sim_ms.is_some()
}

fn finish_checks(r: &mut Report, fleet: &Fleet) {
    r.check(
        "no bad server envelope or broken job stream",
        fleet.protocol_errors() == 0,
        format!("{} protocol errors", fleet.protocol_errors()),
    );
    r.agent_errors = fleet.errors();
}

/// Starts `perf record` on the server when `--perf` asks for it.
fn profile(opts: &Options, server: &ServerProcess, r: &mut Report) -> Option<Profiler> {
    let out = opts.perf.as_ref()?;
    let Some(pid) = server.pid() else {
        r.note("--perf: no server pid to profile");
        return None;
    };
    match Profiler::start(pid, out) {
        Ok(p) => {
            r.note(format!("server profile written to {}", out.display()));
            Some(p)
        }
        Err(err) => {
            r.note(format!("--perf: {err:#}"));
            None
        }
    }
}

async fn stop_profile(p: Option<Profiler>) {
    if let Some(p) = p {
        p.stop().await;
    }
}

async fn teardown(fleet: Fleet, mut server: ServerProcess) {
    fleet.stop(Duration::from_secs(10)).await;
    server.kill().await;
}
