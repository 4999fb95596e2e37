//! Smoke-size runs of every scenario (about 200 agents, a few seconds each) against a real
//! server process. They check correctness only — all online, heartbeats counted, every job
//! result stored exactly once, all back after a restart — and never timings.
//!
//! The nats peer runs when a nats-server answers at REAP3R_TEST_NATS_URL (default
//! nats://127.0.0.1:4222); otherwise it is skipped, or fails with REAP3R_REQUIRE_NATS=1.

// Test helpers outside #[test] functions: failing loudly is their job.
#![allow(clippy::panic, clippy::expect_used)]

use reap3r_bench::report::Report;
use reap3r_bench::{Options, nats, scenarios};

const SERVER_BIN: &str = env!("CARGO_BIN_EXE_bench-reap3r");
const AGENTS: &str = "200";

/// One scenario at a time: they share two cores with everything else.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn nats_url() -> String {
    std::env::var("REAP3R_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `--peer nats` when a nats-server is reachable; skipped (or a failure when required) if not.
async fn nats_peer() -> Vec<String> {
    let url = nats_url();
    match nats::probe(&url).await {
        Ok(()) => vec!["--peer".into(), "nats".into(), "--nats-url".into(), url],
        Err(err) if std::env::var("REAP3R_REQUIRE_NATS").as_deref() == Ok("1") => {
            panic!("REAP3R_REQUIRE_NATS=1 but no nats-server at {url}: {err}")
        }
        Err(err) => {
            eprintln!("skipped: no nats-server at {url} ({err}); the nats peer is not checked");
            Vec::new()
        }
    }
}

async fn run(args: &[&str], extra: Vec<String>) -> Report {
    let _serial = SERIAL.lock().await;
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(
        [
            "--agents",
            AGENTS,
            "--server-bin",
            SERVER_BIN,
            "--timeout-s",
            "90",
            "--agents-per-endpoint",
            "100",
        ]
        .map(String::from),
    );
    all.extend(extra);
    let opts = Options::from_args(&all).expect("options parse");
    let report = scenarios::run(&opts).await.expect("scenario runs");
    eprintln!("{}", report.render());
    let failed: Vec<String> = report
        .failed_checks()
        .iter()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    report
}

fn has_check(report: &Report, name: &str) -> bool {
    report.checks.iter().any(|c| c.ok && c.name.contains(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_brings_every_agent_online() {
    let r = run(&["connect", "--settle-s", "0"], Vec::new()).await;
    assert!(has_check(&r, "server sees all agents online"));
    assert!(has_check(&r, "every simulated agent welcomed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_heartbeats_are_all_counted() {
    let peer = nats_peer().await;
    let with_peer = !peer.is_empty();
    let r = run(
        &[
            "steady",
            "--rate",
            "400",
            "--duration-s",
            "2",
            "--loss-allowance",
            "0.02",
        ],
        peer,
    )
    .await;
    assert!(has_check(&r, "heartbeats counted by the server"));
    assert!(has_check(&r, "all messages counted by the server"));
    assert!(has_check(&r, "all agents stayed connected"));
    assert_eq!(has_check(&r, "nats: every message received"), with_peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_stores_every_result_exactly_once() {
    let peer = nats_peer().await;
    let with_peer = !peer.is_empty();
    let r = run(&["fanout", "--cut", "0.05"], peer).await;
    assert!(has_check(&r, "server stored every result"));
    assert!(has_check(&r, "results list has each agent once"));
    assert!(has_check(&r, "every agent ran the job exactly once"));
    assert!(has_check(&r, "every agent got its result acknowledged"));
    assert_eq!(has_check(&r, "nats: every subscriber replied"), with_peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_brings_every_agent_back() {
    let r = run(&["storm", "--shutdown-grace-s", "5"], Vec::new()).await;
    assert!(has_check(
        &r,
        "server sees all agents back after the restart"
    ));
    assert!(has_check(
        &r,
        "every simulated agent welcomed back after the restart"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_link_still_delivers_every_result_exactly_once() {
    let r = run(
        &["lossy", "--loss", "0.1", "--rtt-ms", "100", "--cut", "0.1"],
        Vec::new(),
    )
    .await;
    assert!(has_check(&r, "server stored every result"));
    assert!(has_check(&r, "results list has each agent once"));
    assert!(has_check(&r, "every agent ran the job exactly once"));
    assert!(r.get("relay_dropped_pct").is_some_and(|p| p > 5.0));
}
