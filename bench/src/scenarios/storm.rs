//! `storm`: restart the server under N connected agents; time until all are back and API
//! latency meanwhile.

use super::*;

#[derive(Debug, Clone, Copy)]
struct ApiSample {
    at_ms: f64,
    path: usize,
    latency_ms: f64,
    ok: bool,
}

const STORM_PATHS: [&str; 2] = ["/api/health", "/api/agents?limit=50"];

pub(super) async fn storm(opts: &Options, r: &mut Report) -> Result<()> {
    let n = opts.agents;
    if opts.quic_addr.is_some() {
        bail!("storm restarts the server, so it needs a server it starts itself");
    }
    r.param("shutdown_grace_s", opts.shutdown_grace_s);
    let bed = prepare(opts, r).await?;
    let mut server = bed.server;
    let mut api = bed.api.clone();
    log_in(&server, &mut api).await?;
    let start = Instant::now();
    let endpoints = direct_endpoints(opts, &server)?;
    let (fleet, online) = start_fleet(opts, (&bed.ids, &bed.pins), &api, endpoints, start).await?;
    if !online_checks(r, &online, n, "online before the restart") {
        finish_checks(r, &fleet);
        teardown(fleet, server).await;
        return Ok(());
    }

    // Sample the API through the whole storm.
    let storm_start = Instant::now();
    let samples: Arc<Mutex<Vec<ApiSample>>> = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (api, samples, sampling) = (api.clone(), samples.clone(), sampling.clone());
        let period = Duration::from_millis(opts.api_sample_ms.max(10));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                interval.tick().await;
                for (path, p) in STORM_PATHS.iter().enumerate() {
                    let at_ms = ms_between(storm_start, Instant::now());
                    let (latency, result) = api.timed_get(p).await;
                    let ok = matches!(result, Ok(200));
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(ApiSample {
                            at_ms,
                            path,
                            latency_ms: latency.as_secs_f64() * 1000.0,
                            ok,
                        });
                }
            }
        })
    };
    let shutdown = server
        .terminate(Duration::from_secs(opts.shutdown_grace_s + 30))
        .await?;
    let restart_at = Instant::now();
    let since_us = fleet.now_us();
    server.spawn().await?;
    let prof = profile(opts, &server, r);
    let ready = server.wait_ready(Duration::from_secs(60)).await;
    let back = wait_online(
        &api,
        &fleet,
        since_us,
        restart_at,
        Duration::from_secs(opts.timeout_s),
    )
    .await;
    stop_profile(prof).await;
    let back_at_ms = ms_between(storm_start, restart_at) + back.server_ms.unwrap_or(f64::NAN);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(15), sampler).await;

    r.fig(
        "shutdown_s",
        "SIGTERM → server exited",
        shutdown.as_secs_f64(),
        "s",
    );
    if let Ok(d) = &ready {
        r.fig("ready_s", "restart → /api/ready", d.as_secs_f64(), "s");
    }
    let all_back = online_checks(r, &back, n, "back after the restart");
    if let Some(ms) = back.server_ms {
        r.fig(
            "back_s",
            "restart → all back online (server's gauge)",
            ms / 1000.0,
            "s",
        );
        r.fig(
            "back_from_sigterm_s",
            "SIGTERM → all back online",
            (ms + shutdown.as_secs_f64() * 1000.0) / 1000.0,
            "s",
        );
    }
    if let Some(ms) = back.sim_ms {
        r.fig(
            "back_sim_s",
            "restart → all welcomed again (agents' view)",
            ms / 1000.0,
            "s",
        );
    }
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let up_from = ms_between(storm_start, restart_at)
        + ready
            .as_ref()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
    let until = if back_at_ms.is_finite() {
        back_at_ms
    } else {
        f64::INFINITY
    };
    for (path, name) in STORM_PATHS.iter().enumerate() {
        let during: Vec<&ApiSample> = samples
            .iter()
            .filter(|s| s.path == path && s.at_ms >= up_from && s.at_ms <= until)
            .collect();
        let lat = Summary::of(
            during
                .iter()
                .filter(|s| s.ok)
                .map(|s| s.latency_ms)
                .collect(),
        );
        let failed = during.iter().filter(|s| !s.ok).count();
        let key = if path == 0 { "health" } else { "agents" };
        r.fig(
            &format!("api_{key}_p50_ms"),
            &format!("GET {name} p50 during reconnects"),
            lat.p50,
            "ms",
        );
        r.fig(
            &format!("api_{key}_p99_ms"),
            &format!("GET {name} p99 during reconnects"),
            lat.p99,
            "ms",
        );
        r.fig(
            &format!("api_{key}_max_ms"),
            &format!("GET {name} max during reconnects"),
            lat.max,
            "ms",
        );
        r.fig(
            &format!("api_{key}_failed"),
            &format!("GET {name} failures while up"),
            failed as f64,
            "",
        );
        r.fig(
            &format!("api_{key}_samples"),
            &format!("GET {name} samples while up"),
            during.len() as f64,
            "",
        );
    }
    let down = samples
        .iter()
        .filter(|s| s.at_ms < up_from && !s.ok)
        .count();
    r.fig(
        "api_unavailable",
        "API requests refused while restarting",
        down as f64,
        "",
    );
    let back_s = back
        .server_ms
        .map(|ms| ms / 1000.0)
        .unwrap_or(f64::INFINITY);
    r.target(
        "storm: 10,000 agents back ≤ 10 s after a restart",
        match (n >= TARGET_STORM_N, all_back && back_s <= TARGET_STORM_S) {
            (false, _) => Verdict::NotApplicable,
            (true, true) => Verdict::Met,
            (true, false) => Verdict::Missed,
        },
        format!("{back_s:.2} s from restart at N={n}"),
    );
    finish_checks(r, &fleet);
    teardown(fleet, server).await;
    Ok(())
}
