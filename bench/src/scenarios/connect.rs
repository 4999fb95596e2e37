//! `connect`: enrol and connect N agents; time to all online, server RSS per agent, CPU.

use super::*;

pub(super) async fn connect(opts: &Options, r: &mut Report) -> Result<()> {
    let n = opts.agents;
    r.param("ramp", opts.ramp);
    let bed = prepare(opts, r).await?;
    // Let the enrolment connections close before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = bed.server.rss_bytes();
    let cpu0 = bed.server.cpu_seconds();
    let me0 = self_cpu_seconds();
    let start = Instant::now();
    let prof = profile(opts, &bed.server, r);
    let endpoints = direct_endpoints(opts, &bed.server)?;
    let (fleet, online) =
        start_fleet(opts, (&bed.ids, &bed.pins), &bed.api, endpoints, start).await?;
    stop_profile(prof).await;
    let cpu1 = bed.server.cpu_seconds();
    let me1 = self_cpu_seconds();
    let all = online_checks(r, &online, n, "online");
    if let Some(ms) = online.server_ms {
        r.fig(
            "online_s",
            "time to all online (server's gauge)",
            ms / 1000.0,
            "s",
        );
        r.fig(
            "connect_rate",
            "connections per second",
            n as f64 / (ms / 1000.0),
            "/s",
        );
    }
    if let Some(ms) = online.sim_ms {
        r.fig(
            "online_sim_s",
            "time to all welcomed (agents' view)",
            ms / 1000.0,
            "s",
        );
    }
    let settle = Duration::from_secs(opts.settle_s);
    tokio::time::sleep(settle).await;
    let rss1 = bed.server.rss_bytes();
    let cpu2 = bed.server.cpu_seconds();
    if let (Some(a), Some(b)) = (rss0, rss1) {
        let per = (b as f64 - a as f64) / n as f64;
        r.fig(
            "rss_before_mib",
            "server RSS before connecting",
            a as f64 / 1048576.0,
            "MiB",
        );
        r.fig(
            "rss_after_mib",
            "server RSS with all connected",
            b as f64 / 1048576.0,
            "MiB",
        );
        r.fig(
            "rss_per_agent_kib",
            "server RSS per connected agent",
            per / 1024.0,
            "KiB",
        );
        let detail = format!("{:.1} KiB per agent at N={n} (target 48 KiB)", per / 1024.0);
        let verdict = if !all {
            Verdict::Missed
        } else if n < 10_000 {
            Verdict::NotApplicable
        } else if per <= TARGET_RSS_PER_AGENT {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        let detail = if verdict == Verdict::NotApplicable {
            format!("{detail}; judged at N ≥ 10000, where fixed costs stop dominating")
        } else {
            detail
        };
        r.target("≤ 48 KB server RSS per idle agent", verdict, detail);
    } else {
        r.note("no server pid: RSS and CPU not measured");
    }
    if let (Some(a), Some(b), Some(c)) = (cpu0, cpu1, cpu2) {
        r.fig("server_cpu_s", "server CPU while connecting", b - a, "s");
        r.fig(
            "server_cpu_per_agent_ms",
            "server CPU per connection",
            (b - a) * 1000.0 / n as f64,
            "ms",
        );
        r.fig(
            "idle_cpu_pct",
            "server CPU with all connected (idle)",
            (c - b) / settle.as_secs_f64() * 100.0,
            "%",
        );
    }
    if let (Some(a), Some(b)) = (me0, me1) {
        r.fig("sim_cpu_s", "simulator CPU while connecting", b - a, "s");
    }
    let verdict = match (n >= TARGET_AGENTS, all) {
        (true, true) => Verdict::Met,
        (true, false) => Verdict::Missed,
        (false, _) => Verdict::NotApplicable,
    };
    r.target(
        "100,000 agents connected to one node",
        verdict,
        format!(
            "{} of {n} online",
            online
                .server_count
                .max(if online.server_ms.is_some() { n } else { 0 })
        ),
    );
    finish_checks(r, &fleet);
    teardown(fleet, bed.server).await;
    Ok(())
}
