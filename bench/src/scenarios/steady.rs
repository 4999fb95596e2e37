//! `steady`: heartbeats and metrics at a fixed rate from pre-signed envelopes; messages/s
//! ingested, CPU per message, p99 latency; optionally the same load against nats-server.

use super::*;

pub(super) async fn steady(opts: &Options, r: &mut Report) -> Result<()> {
    let n = opts.agents;
    let hb_rate = opts.rate.max(1.0);
    let m_rate = opts.metrics_rate.unwrap_or(hb_rate / 2.0).max(0.0);
    let total_rate = hb_rate + m_rate;
    let total = (total_rate * opts.duration_s).round().max(1.0) as u64;
    r.param("heartbeat_rate", hb_rate);
    r.param("metrics_rate", m_rate);
    r.param("duration_s", opts.duration_s);
    let bed = prepare(opts, r).await?;
    let start = Instant::now();
    let endpoints = direct_endpoints(opts, &bed.server)?;
    let (fleet, online) =
        start_fleet(opts, (&bed.ids, &bed.pins), &bed.api, endpoints, start).await?;
    if !online_checks(r, &online, n, "online") {
        finish_checks(r, &fleet);
        teardown(fleet, bed.server).await;
        return Ok(());
    }

    // Pre-sign the whole window in sequence order, heartbeats and metrics interleaved.
    fleet.set_quiet(true);
    let per_agent = total.div_ceil(n as u64) as usize;
    let mfrac = m_rate / total_rate;
    let presign_start = Instant::now();
    let agents = Arc::new(fleet.agents.clone());
    let mut jobs = Vec::new();
    let chunk = n.div_ceil(4).max(1);
    for c in 0..n.div_ceil(chunk) {
        let agents = agents.clone();
        jobs.push(tokio::task::spawn_blocking(move || {
            let mut signed = 0;
            for i in c * chunk..((c + 1) * chunk).min(agents.len()) {
                let lanes: Vec<Lane> = (0..per_agent)
                    .map(|j| {
                        let g = (j * agents.len() + i) as f64;
                        if ((g + 1.0) * mfrac).floor() > (g * mfrac).floor() {
                            Lane::Uni
                        } else {
                            Lane::Datagram
                        }
                    })
                    .collect();
                signed += agents[i].presign(&lanes);
            }
            signed
        }));
    }
    let mut signed = 0;
    for j in jobs {
        signed += j.await?;
    }
    r.fig(
        "presign_s",
        "simulator pre-signing (outside the window)",
        presign_start.elapsed().as_secs_f64(),
        "s",
    );
    r.check(
        "every message pre-signed",
        signed as u64 >= total,
        format!("{signed} of {total}"),
    );

    let m0 = bed.api.metrics().await?;
    let base = (
        m0.get("reap3r_agent_heartbeats_total")
            .copied()
            .unwrap_or(0.0) as u64,
        m0.get("reap3r_agent_messages_in_total")
            .copied()
            .unwrap_or(0.0) as u64,
    );
    let cpu0 = bed.server.cpu_seconds();
    let me0 = self_cpu_seconds();
    let start = Instant::now();
    let prof = profile(opts, &bed.server, r);
    let observer = Observer::server(
        bed.api.clone(),
        start,
        Duration::from_millis(opts.sample_ms.max(1)),
        base,
    );
    let agents = &fleet.agents;
    let paced = load::pace(
        start,
        total,
        total_rate,
        Duration::from_millis(2),
        async |i| match agents[(i % n as u64) as usize].send_presigned() {
            Outgoing::Datagram => Sent::Heartbeat,
            Outgoing::DatagramFailed => Sent::Failed,
            Outgoing::Nothing => Sent::Nothing,
            Outgoing::Uni(conn, bytes) => {
                tokio::spawn(async move {
                    let _ = send_on_uni(&conn, &bytes).await;
                });
                Sent::Other
            }
        },
    )
    .await;
    let me1 = self_cpu_seconds();
    let series = observer
        .drain(
            paced.heartbeats,
            Duration::from_secs(1),
            Duration::from_secs(20),
        )
        .await;
    stop_profile(prof).await;
    let cpu1 = bed.server.cpu_seconds();
    let window_ms = paced.elapsed_s * 1000.0;
    let last = series.last().copied().unwrap_or((0.0, 0, 0));
    let at_end = value_at(&series, window_ms).unwrap_or((window_ms, 0, 0));
    let (hb_recv, msgs_recv) = (last.1, last.2);
    let sent_msgs = paced.heartbeats + paced.other;
    // When the counter last moved: the end of ingestion.
    let done_ms = series
        .iter()
        .find(|o| o.1 >= hb_recv && o.2 >= msgs_recv)
        .map(|o| o.0)
        .unwrap_or(last.0);

    r.fig(
        "offered_hb_per_s",
        "heartbeats offered per second",
        paced.heartbeats as f64 / paced.elapsed_s,
        "/s",
    );
    r.fig(
        "offered_msgs_per_s",
        "messages offered per second (with metrics)",
        sent_msgs as f64 / paced.elapsed_s,
        "/s",
    );
    r.fig(
        "hb_per_s",
        "signed heartbeats ingested per second",
        at_end.1 as f64 / (at_end.0 / 1000.0),
        "/s",
    );
    r.fig(
        "msgs_per_s",
        "signed messages ingested per second",
        at_end.2 as f64 / (at_end.0 / 1000.0),
        "/s",
    );
    r.fig(
        "hb_sustained_per_s",
        "heartbeats per second, until the last one counted",
        hb_recv as f64 / (done_ms / 1000.0),
        "/s",
    );
    let lost = 1.0 - hb_recv as f64 / paced.heartbeats.max(1) as f64;
    r.fig("hb_lost_pct", "heartbeats not counted", lost * 100.0, "%");
    let lat = Summary::of(cohort_latencies(
        &paced.samples,
        &series,
        hb_recv as f64 / paced.heartbeats.max(1) as f64,
    ));
    r.fig(
        "ingest_p50_ms",
        "ingest latency p50 (send → counted)",
        lat.p50,
        "ms",
    );
    r.fig(
        "ingest_p99_ms",
        "ingest latency p99 (send → counted)",
        lat.p99,
        "ms",
    );
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        r.fig(
            "server_cpu_pct",
            "server CPU during the load",
            (b - a) / (done_ms / 1000.0) * 100.0,
            "%",
        );
        r.fig(
            "cpu_per_msg_us",
            "server CPU per message",
            (b - a) / msgs_recv.max(1) as f64 * 1e6,
            "µs",
        );
    }
    if let (Some(a), Some(b)) = (me0, me1) {
        r.fig(
            "sim_cpu_pct",
            "simulator CPU during the load",
            (b - a) / paced.elapsed_s * 100.0,
            "%",
        );
    }
    let need = (paced.heartbeats as f64 * (1.0 - opts.loss_allowance)).floor() as u64;
    r.check(
        "heartbeats counted by the server",
        hb_recv >= need && paced.heartbeats > 0,
        format!(
            "{hb_recv} of {} sent (at least {need} required)",
            paced.heartbeats
        ),
    );
    let need_msgs = (sent_msgs as f64 * (1.0 - opts.loss_allowance)).floor() as u64;
    r.check(
        "all messages counted by the server",
        msgs_recv >= need_msgs,
        format!("{msgs_recv} of {sent_msgs} sent (at least {need_msgs} required)"),
    );
    r.check(
        "every pre-signed message went out",
        paced.failed == 0 && paced.nothing == 0,
        format!(
            "{} failed sends, {} agents with nothing left",
            paced.failed, paced.nothing
        ),
    );
    r.check(
        "all agents stayed connected",
        fleet.online() == n,
        format!("{} of {n} online", fleet.online()),
    );
    let offered = paced.heartbeats as f64 / paced.elapsed_s;
    let ingested = r.get("hb_per_s").unwrap_or(0.0);
    let verdict = if offered < TARGET_HEARTBEATS * 0.98 {
        Verdict::NotApplicable
    } else if ingested >= TARGET_HEARTBEATS {
        Verdict::Met
    } else {
        Verdict::Missed
    };
    r.target(
        "≥ 30,000 signed heartbeats/s ingested",
        verdict,
        format!(
            "{ingested:.0}/s ingested of {offered:.0}/s offered ({m_rate:.0} metrics/s alongside)"
        ),
    );
    finish_checks(r, &fleet);
    teardown(fleet, bed.server).await;

    if opts.peer == Some(Peer::Nats) {
        // Same connections, same total message rate, heartbeat-sized payloads.
        let peer = nats::heartbeats(
            &opts.nats_url,
            n,
            vec![0x5a; PEER_HEARTBEAT_BYTES],
            total_rate,
            Duration::from_secs_f64(opts.duration_s),
            Duration::from_millis(opts.sample_ms.max(1)),
        )
        .await
        .context("nats heartbeat workload")?;
        let p = &peer.paced;
        let end = value_at(&peer.series, p.elapsed_s * 1000.0).unwrap_or((1.0, 0, 0));
        let rate = end.2 as f64 / (end.0 / 1000.0);
        r.peer("msgs_per_s", rate);
        let lat = Summary::of(cohort_latencies(
            &p.samples,
            &peer.series,
            peer.received as f64 / p.heartbeats.max(1) as f64,
        ));
        r.peer("ingest_p50_ms", lat.p50);
        r.peer("ingest_p99_ms", lat.p99);
        r.fig(
            "nats_msg_p50_ms",
            "nats only: per-message latency p50 (timestamped)",
            peer.per_message.p50,
            "ms",
        );
        r.fig(
            "nats_msg_p99_ms",
            "nats only: per-message latency p99 (timestamped)",
            peer.per_message.p99,
            "ms",
        );
        r.check(
            "nats: every message received",
            peer.received >= p.heartbeats && p.heartbeats > 0,
            format!("{} of {} published", peer.received, p.heartbeats),
        );
        r.note("nats peer: same N connections and total message rate, heartbeat-sized payloads; nothing is verified or signed on that side");
    }
    Ok(())
}
