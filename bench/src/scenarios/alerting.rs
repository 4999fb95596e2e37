//! `alerting`: metrics ingestion with alert rules enabled, a threshold crossing timed all the
//! way to a real webhook receiver, and metrics storage per agent per day.
//!
//! 1. The server pushes `--metrics-interval-s` (10) to N agents (10,000 → 1,000 samples/s) and
//!    runs `--rules` (100) threshold rules, every one evaluated on every sample. Over
//!    `--ingest-s` the samples the agents sent are compared with those the server stored
//!    (backlog at the start and at the end of the window), and server CPU is divided by the
//!    samples stored.
//! 2. `--hot` agents start reporting 99 % CPU; one of the rules (`cpu.percent > 90` for
//!    `--alert-for-s`) fires for each of them, and a policy sends each alert to the bench's
//!    webhook receiver. Latency = arrival at the receiver − (the agent's first hot sample +
//!    `for`): what the operator waits beyond the `for` they asked for.
//! 3. Storage per agent per day at each level ([`super::storage`]) on a fresh SQLite file, and
//!    on a fresh PostgreSQL database with `--storage-postgres-url`.

use std::collections::{HashMap, HashSet};

use reap3r_store::Store;

use super::storage::{self, LevelCost};
use super::*;
use crate::webhook::Receiver;

/// p99 from the end of `for` to the webhook receiver (issue: monitoring and alerting).
const TARGET_ALERT_P99_MS: f64 = 2000.0;
const WEBHOOK_SECRET: &str = "reap3r-bench-webhook-secret";
const HOT_RULE: &str = "bench: cpu hot";

/// Rules that are evaluated on every sample and never hold for the simulator's values (memory
/// 22 %, load 0.1, disk 31 %, 200 processes, no errors), over several aggregations and windows.
fn background_rule(i: usize) -> Value {
    const CONDITIONS: [(&str, &str, f64); 8] = [
        ("mem.used_percent", ">", 99.0),
        ("load.1", ">", 500.0),
        ("load.5", ">", 500.0),
        ("disk.used_percent", ">", 99.5),
        ("processes.count", ">", 1e6),
        ("net.rx_errors", ">", 1e9),
        ("swap.used_bytes", ">", 1e12),
        ("mem.total_bytes", "<", 1.0),
    ];
    const AGGREGATIONS: [&str; 4] = ["avg", "max", "min", "last"];
    const WINDOWS_S: [u32; 3] = [60, 300, 600];
    let (metric, operator, value) = CONDITIONS[i % CONDITIONS.len()];
    json!({
        "name": format!("bench: background {i}"),
        "severity": "warning",
        "condition": {
            "kind": "metric_threshold", "metric": metric, "operator": operator, "value": value,
            "aggregation": AGGREGATIONS[(i / CONDITIONS.len()) % AGGREGATIONS.len()],
            "window_s": WINDOWS_S[i % WINDOWS_S.len()], "for_s": 60,
        },
    })
}

/// The webhook integration, a policy sending every alert on its own (grouped by agent, no
/// group wait: the scenario times each alert), and the rules; the hot rule's id.
async fn configure(opts: &Options, api: &Api, receiver: &Receiver) -> Result<Option<String>> {
    let hook = api
        .create(
            "/api/alerting/integrations",
            &json!({ "name": "bench receiver", "kind": "webhook",
                     "url": receiver.url("/alerts"), "webhook_secret": WEBHOOK_SECRET }),
        )
        .await?;
    api.create(
        "/api/alerting/policies",
        &json!({ "name": "bench: every alert", "integrations": [hook],
                 "group_by": ["rule", "agent"], "group_wait_s": 0 }),
    )
    .await?;
    if opts.rules == 0 {
        return Ok(None);
    }
    let hot_rule = api
        .create(
            "/api/alerting/rules",
            &json!({
                "name": HOT_RULE,
                "severity": "critical",
                "condition": { "kind": "metric_threshold", "metric": "cpu.percent", "operator": ">",
                               "value": 90.0, "aggregation": "last", "window_s": 60,
                               "for_s": opts.alert_for_s },
            }),
        )
        .await?;
    for i in 1..opts.rules {
        api.create("/api/alerting/rules", &background_rule(i))
            .await?;
    }
    Ok(Some(hot_rule))
}

/// Counters of the metrics pipeline at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Pipeline {
    sent: u64,
    stored: u64,
    lost: u64,
    cpu_s: Option<f64>,
    at: Option<Instant>,
}

async fn pipeline(api: &Api, fleet: &Fleet, server: &ServerProcess) -> Result<Pipeline> {
    let m = api.metrics().await?;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0) as u64;
    Ok(Pipeline {
        sent: fleet
            .agents
            .iter()
            .map(|a| a.metrics_sent.load(std::sync::atomic::Ordering::Relaxed))
            .sum(),
        stored: get("reap3r_metrics_samples_stored_total"),
        lost: get("reap3r_metrics_samples_dropped_total")
            + get("reap3r_metrics_samples_lost_total")
            + get("reap3r_metrics_samples_refused_total"),
        cpu_s: server.cpu_seconds(),
        at: Some(Instant::now()),
    })
}

fn ingestion_figures(opts: &Options, r: &mut Report, a: Pipeline, b: Pipeline) {
    let secs = match (a.at, b.at) {
        (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-3),
        _ => opts.ingest_s as f64,
    };
    let stored = b.stored.saturating_sub(a.stored);
    r.fig(
        "samples_offered_per_s",
        "metrics samples sent per second",
        b.sent.saturating_sub(a.sent) as f64 / secs,
        "/s",
    );
    r.fig(
        "samples_stored_per_s",
        "metrics samples stored per second",
        stored as f64 / secs,
        "/s",
    );
    let backlog = |p: Pipeline| p.sent.saturating_sub(p.stored + p.lost) as f64;
    r.fig(
        "backlog_start",
        "samples sent, not yet stored, at the window's start",
        backlog(a),
        "",
    );
    r.fig(
        "backlog_end",
        "samples sent, not yet stored, at the window's end",
        backlog(b),
        "",
    );
    if let (Some(c0), Some(c1)) = (a.cpu_s, b.cpu_s) {
        r.fig(
            "server_cpu_pct",
            "server CPU during ingestion (heartbeats included)",
            (c1 - c0) / secs * 100.0,
            "%",
        );
        r.fig(
            "cpu_per_sample_us",
            "server CPU per sample stored (heartbeats and rules included)",
            (c1 - c0) / stored.max(1) as f64 * 1e6,
            "µs",
        );
    }
    // In flight at any moment: about one flush interval and one sample round of the network.
    let rate = opts.agents as f64 / f64::from(opts.metrics_interval_s);
    let slack = (rate * 3.0).max(100.0);
    r.check(
        "ingestion keeps up (backlog does not grow)",
        backlog(b) <= backlog(a) + slack,
        format!(
            "backlog {:.0} → {:.0} (allowed growth {slack:.0})",
            backlog(a),
            backlog(b)
        ),
    );
    r.check(
        "no sample dropped, refused or lost",
        b.lost == a.lost,
        format!("{} dropped, refused or lost in the window", b.lost - a.lost),
    );
}

/// A hot agent's first firing alert as the receiver got it.
#[derive(Debug, Clone)]
struct Arrival {
    received_ms: u64,
    notification_id: Option<String>,
}

/// Firing alerts per agent id from the receiver's deliveries, and the problems seen.
struct Arrivals {
    first_ms: HashMap<String, Arrival>,
    duplicates: usize,
    bad_signatures: usize,
    other: usize,
    /// A few of the others, for the report.
    other_sample: Vec<String>,
}

fn arrivals(receiver: &Receiver, hot_ids: &HashSet<String>) -> Arrivals {
    let mut out = Arrivals {
        first_ms: HashMap::new(),
        duplicates: 0,
        bad_signatures: 0,
        other: 0,
        other_sample: Vec::new(),
    };
    let mut notifications = HashSet::new();
    for d in receiver.deliveries() {
        if !d.signature_valid {
            out.bad_signatures += 1;
        }
        if let Some(id) = &d.notification_id
            && !notifications.insert(id.clone())
        {
            out.duplicates += 1;
        }
        if d.body["kind"] != "firing" {
            continue;
        }
        for alert in d.body["alerts"].as_array().into_iter().flatten() {
            let agent = alert["agent_id"].as_str().unwrap_or_default().to_string();
            if alert["rule_name"] != HOT_RULE || !hot_ids.contains(&agent) {
                out.other += 1;
                if out.other_sample.len() < 3 {
                    out.other_sample.push(format!(
                        "{} {agent}: {}",
                        alert["rule_name"], alert["summary"]
                    ));
                }
            } else if out
                .first_ms
                .insert(
                    agent,
                    Arrival {
                        received_ms: d.received_ms,
                        notification_id: d.notification_id.clone(),
                    },
                )
                .is_some()
            {
                out.duplicates += 1;
            }
        }
    }
    out
}

async fn threshold_crossing(
    opts: &Options,
    r: &mut Report,
    (api, hot_rule): (&Api, &str),
    fleet: &Fleet,
    receiver: &Receiver,
) {
    let n = fleet.len();
    let hot = opts.hot.min(n);
    // Spread over the fleet (and so over the client endpoints).
    let hot_agents: Vec<&Arc<SimAgent>> = (0..hot)
        .map(|i| &fleet.agents[i * n / hot.max(1)])
        .collect();
    let hot_ids: HashSet<String> = hot_agents
        .iter()
        .map(|a| uuid::Uuid::from_bytes(a.id).to_string())
        .collect();
    for a in &hot_agents {
        a.set_hot(true);
    }
    let deadline = Instant::now()
        + Duration::from_secs(
            u64::from(opts.alert_for_s) + u64::from(opts.metrics_interval_s) * 2 + 60,
        );
    loop {
        let seen = arrivals(receiver, &hot_ids);
        if seen.first_ms.len() >= hot || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for duplicates or stray alerts to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = arrivals(receiver, &hot_ids);
    let for_ms = u64::from(opts.alert_for_s) * 1000;
    let latencies: Vec<f64> = hot_agents
        .iter()
        .filter_map(|a| {
            let id = uuid::Uuid::from_bytes(a.id).to_string();
            let got = seen.first_ms.get(&id)?.received_ms;
            let due = a.first_hot_ms()? + for_ms;
            Some(got as f64 - due as f64)
        })
        .collect();
    let lat = Summary::of(latencies);
    r.fig(
        "alert_p50_ms",
        "end of `for` → webhook received, p50",
        lat.p50,
        "ms",
    );
    r.fig(
        "alert_p99_ms",
        "end of `for` → webhook received, p99",
        lat.p99,
        "ms",
    );
    r.fig(
        "alert_max_ms",
        "end of `for` → webhook received, max",
        lat.max,
        "ms",
    );
    match stages(api, hot_rule, &hot_agents, &seen, for_ms).await {
        Ok(stages) => stage_figures(r, &stages),
        Err(err) => r.note(format!("alert latency stages not read: {err:#}")),
    }
    r.check(
        "every hot agent's alert reached the webhook",
        seen.first_ms.len() == hot,
        format!("{} of {hot}", seen.first_ms.len()),
    );
    r.check(
        "no duplicate notification, none for a quiet agent or rule",
        seen.duplicates == 0 && seen.other == 0,
        format!(
            "{} duplicates, {} others {:?}",
            seen.duplicates, seen.other, seen.other_sample
        ),
    );
    r.check(
        "every webhook signature verifies",
        seen.bad_signatures == 0,
        format!("{} bad", seen.bad_signatures),
    );
    r.check(
        "no alert before its `for` elapsed",
        // With nothing delivered the check above has failed already; there is nothing to time.
        lat.count == 0 || lat.min >= 0.0,
        format!("earliest {:.0} ms after the end of `for`", lat.min),
    );
    let verdict = if n < TARGET_FANOUT_N || opts.rules < 100 {
        Verdict::NotApplicable
    } else if lat.p99 <= TARGET_ALERT_P99_MS {
        Verdict::Met
    } else {
        Verdict::Missed
    };
    r.target(
        "threshold crossing → webhook p99 ≤ 2 s after `for` (10,000 agents, 100 rules)",
        verdict,
        format!("p99 {:.0} ms over {hot} alerts", lat.p99),
    );
}

/// Where an alert's time goes, one list of milliseconds per stage (in order, they add up to the
/// latency above).
#[derive(Debug, Default)]
struct Stages {
    /// First hot sample taken → the event's pending `since`: 0 when the condition counts from
    /// the sample's `taken_at`; more if it was clamped (older than the lag) or a later sample
    /// started it.
    sampled: Vec<f64>,
    /// Pending → fired, beyond `for`: how late the rule's timer fired.
    timer: Vec<f64>,
    /// Fired → notification queued: the routing driver's batch and commit.
    routed: Vec<f64>,
    /// Queued → received: the notifier's claim, render and HTTP.
    delivered: Vec<f64>,
}

/// Reads the hot rule's events (pending and fired times) and the notifications (queued times)
/// and splits each timed alert's latency into [`Stages`].
async fn stages(
    api: &Api,
    hot_rule: &str,
    hot_agents: &[&Arc<SimAgent>],
    seen: &Arrivals,
    for_ms: u64,
) -> Result<Stages> {
    let mut events: HashMap<String, (f64, f64)> = HashMap::new();
    let mut before: Option<String> = None;
    loop {
        let cursor = before
            .as_deref()
            .map(|c| format!("&before={c}"))
            .unwrap_or_default();
        let page = api
            .get_json(&format!(
                "/api/alerting/events?rule_id={hot_rule}&limit=200{cursor}"
            ))
            .await?;
        for e in page["items"].as_array().into_iter().flatten() {
            if let (Some(agent), Some(pending), Some(fired)) = (
                e["agent_id"].as_str(),
                e["pending_at"].as_f64(),
                e["fired_at"].as_f64(),
            ) {
                events.entry(agent.to_owned()).or_insert((pending, fired));
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => break,
        }
    }
    let notifications = api
        .get_json("/api/alerting/notifications?limit=500")
        .await?;
    let queued: HashMap<&str, f64> = notifications
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["id"].as_str()?, n["created_at"].as_f64()?)))
        .collect();
    let mut out = Stages::default();
    for a in hot_agents {
        let id = uuid::Uuid::from_bytes(a.id).to_string();
        let (Some(arrival), Some(&(pending, fired)), Some(first)) =
            (seen.first_ms.get(&id), events.get(&id), a.first_hot_ms())
        else {
            continue;
        };
        let Some(&queued_at) = arrival
            .notification_id
            .as_deref()
            .and_then(|n| queued.get(n))
        else {
            continue;
        };
        out.sampled.push(pending - first as f64);
        out.timer.push(fired - pending - for_ms as f64);
        out.routed.push(queued_at - fired);
        out.delivered.push(arrival.received_ms as f64 - queued_at);
    }
    Ok(out)
}

fn stage_figures(r: &mut Report, s: &Stages) {
    let stages = [
        (
            "sampled",
            "first hot sample → event's pending since",
            &s.sampled,
        ),
        ("timer", "pending → fired, beyond `for`", &s.timer),
        ("routed", "fired → notification queued", &s.routed),
        ("delivered", "queued → webhook received", &s.delivered),
    ];
    for (key, label, values) in stages {
        let sum = Summary::of(values.clone());
        r.fig(
            &format!("alert_stage_{key}_p50_ms"),
            &format!("{label}, p50"),
            sum.p50,
            "ms",
        );
        r.fig(
            &format!("alert_stage_{key}_p99_ms"),
            &format!("{label}, p99"),
            sum.p99,
            "ms",
        );
    }
}

fn storage_figures(r: &mut Report, backend: &str, costs: &[LevelCost]) {
    for c in costs {
        let level = c.level.as_str();
        r.fig(
            &format!("storage_{backend}_{level}_kib"),
            &format!("{backend}: {level} storage per agent per day"),
            c.bytes as f64 / 1024.0,
            "KiB",
        );
        r.fig(
            &format!("storage_{backend}_{level}_rows"),
            &format!("{backend}: {level} rows per agent per day"),
            c.rows as f64,
            "",
        );
    }
}

async fn measure_storage(opts: &Options, r: &mut Report) -> Result<()> {
    let agents = opts.storage_agents;
    if agents == 0 {
        return Ok(());
    }
    let dir = tempfile::Builder::new()
        .prefix("reap3r-bench-storage-")
        .tempdir()?;
    let store = Store::open_sqlite_file(&dir.path().join("metrics.db")).await?;
    let costs = storage::per_agent_day(&store, agents, opts.metrics_interval_s).await?;
    storage_figures(r, "sqlite", &costs);
    drop(store);
    if let Some(admin) = &opts.storage_postgres_url {
        let (url, name) = storage::fresh_postgres(admin).await?;
        let result = async {
            let store = Store::open(&url).await?;
            let costs = storage::per_agent_day(&store, agents, opts.metrics_interval_s).await;
            store.close().await;
            costs
        }
        .await;
        storage::drop_postgres(admin, &name).await?;
        storage_figures(r, "postgres", &result?);
    }
    r.note(format!(
        "storage: one simulated day of 1 sample/{} s for {agents} agents (1 mount, 1 interface: {} series per sample) through the store's insert and rollup passes",
        opts.metrics_interval_s,
        reap3r_actors::metrics::series_of(&crate::sim::sample(0, false, 0)).len()
    ));
    Ok(())
}

pub(super) async fn alerting(opts: &Options, r: &mut Report) -> Result<()> {
    let n = opts.agents;
    r.param("metrics_interval_s", opts.metrics_interval_s);
    r.param("rules", opts.rules);
    r.param("hot_agents", opts.hot.min(n));
    r.param("alert_for_s", opts.alert_for_s);
    r.param("ingest_s", opts.ingest_s);
    let mut server_opts = server_options(opts);
    server_opts.env.extend([
        (
            "REAP3R_METRICS_INTERVAL_S".to_string(),
            opts.metrics_interval_s.to_string(),
        ),
        // The receiver listens on loopback, which webhooks may only reach when allowed.
        (
            "REAP3R_ALERTING_ALLOW_LOOPBACK".to_string(),
            "1".to_string(),
        ),
    ]);
    let mut bed = prepare_with(opts, r, server_opts).await?;
    log_in(&bed.server, &mut bed.api).await?;
    let receiver = Receiver::start(WEBHOOK_SECRET.as_bytes().to_vec()).await?;
    let hot_rule = configure(opts, &bed.api, &receiver).await?;

    let start = Instant::now();
    let endpoints = direct_endpoints(opts, &bed.server)?;
    let (fleet, online) =
        start_fleet(opts, (&bed.ids, &bed.pins), &bed.api, endpoints, start).await?;
    if online_checks(r, &online, n, "online") {
        // Every agent's metrics timer has run once: the rate is steady from here.
        tokio::time::sleep(Duration::from_secs(u64::from(opts.metrics_interval_s) + 2)).await;
        let prof = profile(opts, &bed.server, r);
        let a = pipeline(&bed.api, &fleet, &bed.server).await?;
        tokio::time::sleep(Duration::from_secs(opts.ingest_s)).await;
        let b = pipeline(&bed.api, &fleet, &bed.server).await?;
        stop_profile(prof).await;
        ingestion_figures(opts, r, a, b);
        if let Some(rule) = hot_rule.as_deref().filter(|_| opts.hot > 0) {
            threshold_crossing(opts, r, (&bed.api, rule), &fleet, &receiver).await;
        }
    }
    finish_checks(r, &fleet);
    teardown(fleet, bed.server).await;
    receiver.stop().await;
    measure_storage(opts, r).await
}
