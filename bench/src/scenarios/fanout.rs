//! `fanout` and `lossy`: a no-op job to all N agents (through a UDP impairment relay for
//! lossy), with optional link cuts; every result exactly once, p50/p99, nats-server peer.

use super::*;

#[derive(Debug, Default)]
struct JobOutcome {
    post_ms: f64,
    stored_ms: Option<f64>,
    acked_ms: Option<f64>,
    /// POST sent → JobResultAck received by the agent (the result is committed), ms.
    latencies: Vec<f64>,
    succeeded: usize,
    terminal: usize,
    rows: usize,
    distinct_agents: usize,
    rows_succeeded: usize,
    /// Server clock: dispatched_at → finished_at, ms.
    dispatch_to_finish: Vec<f64>,
    bad_executions: usize,
    unacked: usize,
    refused: usize,
    duplicates: u64,
    replays: u64,
    cuts: usize,
    /// Result rows in a state other than succeeded, by state.
    other_states: std::collections::BTreeMap<String, usize>,
    server_cpu_s: Option<f64>,
}

fn job_body(opts: &Options) -> Value {
    json!({
        "type": "run_script",
        "targets": { "all": true },
        "payload": { "interpreter": "sh", "script": "true" },
        "timeout_s": opts.job_timeout_s,
    })
}

fn terminal_count(job: &Value) -> usize {
    ["succeeded", "failed", "timed_out", "cancelled", "expired"]
        .iter()
        .filter_map(|k| find_number(job, k))
        .sum::<f64>() as usize
}

/// Cuts the links of about `fraction` of the agents, in three waves after the POST.
async fn cut_links(agents: Vec<Arc<SimAgent>>, fraction: f64) -> usize {
    let mut rng = Rng::new();
    let mut cut = 0;
    let mut waited = Duration::ZERO;
    for at in [50u64, 250, 1000] {
        let at = Duration::from_millis(at);
        tokio::time::sleep(at.saturating_sub(waited)).await;
        waited = at;
        for a in &agents {
            if rng.chance(fraction / 3.0) && a.cut_link() {
                cut += 1;
            }
        }
    }
    cut
}

async fn run_job(
    opts: &Options,
    api: &Api,
    fleet: &Fleet,
    server: &ServerProcess,
    cut: f64,
) -> Result<JobOutcome> {
    let n = fleet.len();
    let mut out = JobOutcome::default();
    let cpu0 = server.cpu_seconds();
    let t0_us = fleet.now_us();
    let start = Instant::now();
    let id = api.create_job(&job_body(opts)).await?;
    out.post_ms = ms_between(start, Instant::now());
    let cutter = (cut > 0.0).then(|| tokio::spawn(cut_links(fleet.agents.clone(), cut)));
    let job_id = uuid::Uuid::parse_str(&id)
        .with_context(|| format!("job id {id}"))?
        .into_bytes();
    let deadline = start + Duration::from_secs(opts.timeout_s);
    let mut last_job = Value::Null;
    loop {
        if out.stored_ms.is_none()
            && let Ok(job) = api.job(&id).await
        {
            out.terminal = terminal_count(&job);
            if out.terminal >= n {
                out.stored_ms = Some(ms_between(start, Instant::now()));
            }
            last_job = job;
        }
        if out.acked_ms.is_none() {
            let mut last = 0u64;
            let mut all = true;
            for a in &fleet.agents {
                match a.job(&job_id).first_ack_us {
                    Some(t) => last = last.max(t),
                    None => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                out.acked_ms = Some(last.saturating_sub(t0_us) as f64 / 1000.0);
            }
        }
        if (out.stored_ms.is_some() && out.acked_ms.is_some()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(c) = cutter {
        out.cuts = c.await.unwrap_or(0);
    }
    out.server_cpu_s = match (cpu0, server.cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    if let Ok(job) = api.job(&id).await {
        last_job = job;
    }
    out.terminal = terminal_count(&last_job);
    out.succeeded = find_number(&last_job, "succeeded").unwrap_or(0.0) as usize;
    let rows = api.job_results(&id).await?;
    out.rows = rows.len();
    let mut agents: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.get("agent_id").and_then(Value::as_str))
        .collect();
    agents.sort_unstable();
    agents.dedup();
    out.distinct_agents = agents.len();
    out.rows_succeeded = rows
        .iter()
        .filter(|r| r.get("state").and_then(Value::as_str) == Some("succeeded"))
        .count();
    for row in &rows {
        let state = row.get("state").and_then(Value::as_str).unwrap_or("?");
        if state != "succeeded" {
            *out.other_states.entry(state.to_string()).or_default() += 1;
        }
    }
    out.dispatch_to_finish = rows
        .iter()
        .filter_map(|r| {
            let d = r.get("dispatched_at")?.as_f64()?;
            let f = r.get("finished_at")?.as_f64()?;
            Some(f - d)
        })
        .collect();
    for a in &fleet.agents {
        let t = a.job(&job_id);
        if t.executions != 1 {
            out.bad_executions += 1;
        }
        if t.acks == 0 {
            out.unacked += 1;
        }
        if t.refusals > 0 {
            out.refused += 1;
        }
        out.duplicates += u64::from(t.duplicates);
        out.replays += u64::from(t.results_replayed);
        if let Some(ack) = t.first_ack_us {
            out.latencies
                .push(ack.saturating_sub(t0_us) as f64 / 1000.0);
        }
    }
    Ok(out)
}

pub(super) async fn fanout(
    opts: &Options,
    r: &mut Report,
    lossy: Option<Impairment>,
) -> Result<()> {
    let n = opts.agents;
    r.param("jobs", opts.jobs);
    let cut = opts
        .cut
        .unwrap_or(if lossy.is_some() { 0.1 } else { 0.0 })
        .clamp(0.0, 1.0);
    r.param("cut", cut);
    if let Some(imp) = &lossy {
        r.param("loss", imp.loss);
        r.param("rtt_ms", opts.rtt_ms);
        r.param("jitter_ms", opts.jitter_ms);
        r.param("reorder", imp.reorder);
        r.param("duplicate", imp.duplicate);
    }
    let bed = prepare(opts, r).await?;
    let mut relays = Vec::new();
    let endpoints = match lossy {
        Some(imp) => {
            for _ in 0..Endpoints::count(n, opts.agents_per_endpoint) {
                relays.push(Relay::start(bed.server.quic_addr, imp).await?);
            }
            Endpoints::new(
                relays.iter().map(|r| r.listen).collect(),
                opts.agents_per_endpoint,
            )?
        }
        None => direct_endpoints(opts, &bed.server)?,
    };
    let mut api = bed.api.clone();
    log_in(&bed.server, &mut api).await?;
    let start = Instant::now();
    let (fleet, online) = start_fleet(opts, (&bed.ids, &bed.pins), &api, endpoints, start).await?;
    if let Some(ms) = online.server_ms {
        r.fig("online_s", "time to all online", ms / 1000.0, "s");
    }
    if !online_checks(r, &online, n, "online") {
        finish_checks(r, &fleet);
        teardown(fleet, bed.server).await;
        return Ok(());
    }
    let mut outcomes = Vec::new();
    let prof = profile(opts, &bed.server, r);
    for k in 0..opts.jobs.max(1) {
        let o = run_job(opts, &api, &fleet, &bed.server, cut)
            .await
            .with_context(|| format!("job {}", k + 1))?;
        let tag = if opts.jobs > 1 {
            format!("job {}: ", k + 1)
        } else {
            String::new()
        };
        r.check(
            format!("{tag}server stored every result"),
            o.succeeded == n && o.terminal == n,
            format!("{} succeeded, {} terminal of {n}", o.succeeded, o.terminal),
        );
        r.check(
            format!("{tag}results list has each agent once"),
            o.rows == n && o.distinct_agents == n && o.rows_succeeded == n,
            format!(
                "{} rows, {} distinct agents, {} succeeded{}",
                o.rows,
                o.distinct_agents,
                o.rows_succeeded,
                if o.other_states.is_empty() {
                    String::new()
                } else {
                    format!(", others: {:?}", o.other_states)
                }
            ),
        );
        r.check(
            format!("{tag}every agent ran the job exactly once"),
            o.bad_executions == 0 && o.refused == 0,
            format!(
                "{} agents ran it ≠ 1 time, {} refused",
                o.bad_executions, o.refused
            ),
        );
        r.check(
            format!("{tag}every agent got its result acknowledged"),
            o.unacked == 0,
            format!("{} without JobResultAck", o.unacked),
        );
        outcomes.push(o);
    }
    stop_profile(prof).await;
    let all_lat: Vec<f64> = outcomes
        .iter()
        .flat_map(|o| o.latencies.iter().copied())
        .collect();
    let lat = Summary::of(all_lat);
    let d2f = Summary::of(
        outcomes
            .iter()
            .flat_map(|o| o.dispatch_to_finish.iter().copied())
            .collect(),
    );
    let median = |f: &dyn Fn(&JobOutcome) -> Option<f64>| {
        Summary::of(outcomes.iter().filter_map(f).collect()).p50
    };
    r.fig(
        "post_ms",
        "POST /api/jobs answered",
        median(&|o| Some(o.post_ms)),
        "ms",
    );
    r.fig(
        "all_stored_ms",
        "time until every result stored (API)",
        median(&|o| o.stored_ms),
        "ms",
    );
    r.fig(
        "all_acked_ms",
        "time until every agent got its ack",
        median(&|o| o.acked_ms),
        "ms",
    );
    r.fig(
        "result_p50_ms",
        "per-result latency p50 (POST → ack)",
        lat.p50,
        "ms",
    );
    r.fig(
        "result_p99_ms",
        "per-result latency p99 (POST → ack)",
        lat.p99,
        "ms",
    );
    r.fig("result_max_ms", "per-result latency max", lat.max, "ms");
    r.fig(
        "dispatch_to_finish_p99_ms",
        "server: dispatched → finished p99",
        d2f.p99,
        "ms",
    );
    r.fig(
        "job_server_cpu_s",
        "server CPU per job",
        median(&|o| o.server_cpu_s),
        "s",
    );
    let dups: u64 = outcomes.iter().map(|o| o.duplicates).sum();
    let replays: u64 = outcomes.iter().map(|o| o.replays).sum();
    r.fig(
        "duplicate_dispatches",
        "duplicate dispatches answered",
        dups as f64,
        "",
    );
    r.fig(
        "results_replayed",
        "results replayed after reconnects",
        replays as f64,
        "",
    );
    let cuts: usize = outcomes.iter().map(|o| o.cuts).sum();
    r.fig(
        "links_cut",
        "agent connections cut during jobs",
        cuts as f64,
        "",
    );
    if lossy.is_some() {
        let total = RelayStats::default();
        for relay in &relays {
            total.add(&relay.stats);
        }
        let get =
            |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
        r.fig(
            "relay_packets",
            "packets through the impairment relay",
            get(&total.packets),
            "",
        );
        r.fig(
            "relay_dropped_pct",
            "packets dropped by the relay",
            get(&total.dropped) / get(&total.packets).max(1.0) * 100.0,
            "%",
        );
        r.fig(
            "relay_duplicated",
            "packets duplicated by the relay",
            get(&total.duplicated),
            "",
        );
        r.fig(
            "relay_reordered",
            "packets reordered by the relay",
            get(&total.reordered),
            "",
        );
        let ok = r.passed();
        let applicable = opts.loss >= 0.10 && opts.rtt_ms >= 100;
        r.target(
            "10 % loss, 100 ms RTT: every result exactly once",
            match (applicable, ok) {
                (true, true) => Verdict::Met,
                (true, false) => Verdict::Missed,
                (false, _) => Verdict::NotApplicable,
            },
            format!(
                "loss {:.0} % per direction, RTT {} ms, {} agents",
                opts.loss * 100.0,
                opts.rtt_ms,
                n
            ),
        );
    }
    finish_checks(r, &fleet);
    teardown(fleet, bed.server).await;
    drop(relays);

    let mut peer_p99 = None;
    if lossy.is_none() && opts.peer == Some(Peer::Nats) {
        let peer = nats::fanout(
            &opts.nats_url,
            n,
            PEER_REQUEST_BYTES,
            PEER_REPLY_BYTES,
            Duration::from_secs(opts.timeout_s),
        )
        .await
        .context("nats fan-out")?;
        r.peer("all_stored_ms", peer.all_ms);
        r.peer("all_acked_ms", peer.all_ms);
        r.peer("result_p50_ms", peer.latency.p50);
        r.peer("result_p99_ms", peer.latency.p99);
        r.peer("result_max_ms", peer.latency.max);
        r.check(
            "nats: every subscriber replied",
            peer.replies == n,
            format!("{} of {n} replies", peer.replies),
        );
        r.note("nats peer: N subscriber connections, one request with a reply inbox, each reply timed at the requester; nothing stored or signed");
        peer_p99 = Some(peer.latency.p99);
    }
    if lossy.is_none() {
        let p99 = lat.p99;
        let applicable = n >= TARGET_FANOUT_N;
        let stored = outcomes.iter().all(|o| o.succeeded == n);
        r.target(
            "fanout to 10,000: p99 ≤ 1 s, every result stored",
            match (applicable, stored && p99 <= TARGET_FANOUT_P99_MS) {
                (false, _) => Verdict::NotApplicable,
                (true, true) => Verdict::Met,
                (true, false) => Verdict::Missed,
            },
            format!("p99 {p99:.0} ms at N={n}"),
        );
        match peer_p99 {
            Some(peer) => {
                let ratio = p99 / peer;
                r.target(
                    "fanout ≤ 1.5× nats-server (p99, same N, same run)",
                    match (applicable, ratio <= TARGET_FANOUT_RATIO) {
                        (false, _) => Verdict::NotApplicable,
                        (true, true) => Verdict::Met,
                        (true, false) => Verdict::Missed,
                    },
                    format!("{ratio:.2}× ({p99:.0} ms vs {peer:.0} ms)"),
                );
            }
            None => r.target(
                "fanout ≤ 1.5× nats-server (p99, same N, same run)",
                Verdict::NotApplicable,
                "run with --peer nats",
            ),
        }
    }
    Ok(())
}
