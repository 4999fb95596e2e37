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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerting_keeps_up_and_delivers_each_hot_alert_once() {
    let mut extra = Vec::new();
    if let Ok(url) = std::env::var("REAP3R_TEST_POSTGRES_URL") {
        extra = vec!["--storage-postgres-url".to_string(), url];
    }
    let with_pg = !extra.is_empty();
    let r = run(
        &[
            "alerting",
            "--metrics-interval-s",
            "5",
            "--rules",
            "10",
            "--hot",
            "5",
            "--alert-for-s",
            "5",
            "--ingest-s",
            "6",
            "--storage-agents",
            "2",
        ],
        extra,
    )
    .await;
    assert!(has_check(&r, "ingestion keeps up"));
    assert!(has_check(&r, "every hot agent's alert reached the webhook"));
    assert!(has_check(&r, "no duplicate notification"));
    assert!(has_check(&r, "every webhook signature verifies"));
    // One day at one sample per 5 s: the rows each level must hold per agent.
    let backends: &[&str] = if with_pg {
        &["sqlite", "postgres"]
    } else {
        &["sqlite"]
    };
    for backend in backends {
        for (level, rows) in [
            ("raw", 17_280.0),
            ("1m", 1_440.0),
            ("5m", 288.0),
            ("1h", 24.0),
            ("1d", 1.0),
        ] {
            let key = format!("storage_{backend}_{level}_rows");
            assert_eq!(r.get(&key), Some(rows), "{key}");
            // Sizes are page-granular: two agents' few coarse rows may fit in free space.
            let bytes = r.get(&format!("storage_{backend}_{level}_kib"));
            let grows = matches!(level, "raw" | "1m");
            assert!(
                bytes.is_some_and(|b| b > 0.0 || !grows),
                "{backend} {level}: {bytes:?}"
            );
        }
    }
}
