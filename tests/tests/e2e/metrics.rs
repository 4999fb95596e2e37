//! Metrics end to end: a real agent process samples every 5 s, its samples go over QUIC to the
//! session, the metrics writer and the database, and come back through the API (series, CSV,
//! fleet view); while the server is down the agent buffers, and after the restart the outage
//! has no gap; bad queries are 400s with the error body.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use reap3r_store::{AgentStatus, Backend, Uuid};

use crate::api_harness::{Api, default_org, logged_in, now_ms};
use crate::harness::{AgentProcess, TestServer, backends, eventually};

const INTERVAL_S: u32 = 5;
const WAIT: Duration = Duration::from_secs(40);

struct Rig {
    server: TestServer,
    agent: AgentProcess,
    api: Api,
}

async fn rig(backend: Backend) -> Result<Rig> {
    let server = TestServer::start_with(backend, |c| c.metrics_interval_s = INTERVAL_S).await?;
    let token = server.token(false, Some(1), "1h").await?;
    let mut agent = AgentProcess::enrol(server.dir.path(), "metrics", &token).await?;
    agent.start()?;
    server
        .wait_status(agent.id, AgentStatus::Online, Duration::from_secs(20))
        .await?;
    let org = default_org(&server).await?;
    let api = logged_in(&server, org.id, "ops@example.com", "org_admin").await?;
    Ok(Rig { server, agent, api })
}

fn series_path(agent: Uuid, names: &str, from: i64, to: i64, step: i64) -> String {
    format!("/api/agents/{agent}/metrics?names={names}&from={from}&to={to}&step={step}")
}

/// Sample times (raw level, step 1 s) of `cpu.percent` in `[from, now + 1 min)`.
async fn sample_times(api: &Api, agent: Uuid, from: i64) -> Result<Vec<i64>> {
    let body = api
        .get(&series_path(
            agent,
            "cpu.percent",
            from,
            now_ms() + 60_000,
            1,
        ))
        .await?
        .expect(200)?;
    Ok(body["series"][0]["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["t"].as_i64()).collect())
        .unwrap_or_default())
}

#[tokio::test]
async fn metrics_samples_of_a_real_agent_are_queryable() -> Result<()> {
    for backend in backends().await? {
        let Rig { server, agent, api } = rig(backend).await?;
        let from = now_ms() - 60_000;
        let names = "cpu.percent,mem.used_bytes,disk.used_percent,processes.count";
        let body = eventually("two samples through the API", WAIT, || {
            let api = api.clone();
            async move {
                let body = api
                    .get(&series_path(agent.id, names, from, now_ms() + 60_000, 1))
                    .await?
                    .expect(200)?;
                let enough = body["series"]
                    .as_array()
                    .and_then(|s| s.first())
                    .and_then(|s| s["points"].as_array())
                    .is_some_and(|p| p.len() >= 2);
                Ok(enough.then_some(body))
            }
        })
        .await?;
        assert_eq!(body["level"], "raw", "[{backend}] {body}");
        let metrics: Vec<&str> = body["series"]
            .as_array()
            .context("series")?
            .iter()
            .filter_map(|s| s["metric"].as_str())
            .collect();
        for m in [
            "cpu.percent",
            "mem.used_bytes",
            "processes.count",
            "disk.used_percent",
        ] {
            assert!(
                metrics.contains(&m),
                "[{backend}] {m} missing from {metrics:?}"
            );
        }
        let mem = body["series"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["metric"] == "mem.used_bytes"))
            .context("mem series")?;
        assert!(
            mem["points"][0]["max"].as_f64().unwrap_or(0.0) > 0.0,
            "[{backend}] {mem}"
        );
        // A step of 5 minutes reads the 5 m rollup level.
        let coarse = api
            .get(&series_path(agent.id, "cpu.percent", from, now_ms(), 300))
            .await?
            .expect(200)?;
        assert_eq!(coarse["level"], "5m", "[{backend}]");

        // CSV export of the same query.
        let url = format!(
            "{}{}",
            api.base,
            series_path(agent.id, "cpu.percent", from, now_ms() + 60_000, 1)
                .replace("/metrics?", "/metrics/export?")
        );
        let reply = reqwest::Client::new()
            .get(url)
            .bearer_auth(api.bearer.clone().unwrap_or_default())
            .send()
            .await?;
        assert_eq!(reply.status(), 200, "[{backend}]");
        assert!(
            reply.headers()["content-type"]
                .to_str()?
                .starts_with("text/csv")
        );
        let csv = reply.text().await?;
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("time_ms,metric,label,min,avg,max,last,count")
        );
        assert!(
            lines.next().is_some_and(|l| l.contains(",cpu.percent,")),
            "[{backend}] {csv}"
        );

        // The fleet view lists the agent with its latest process count.
        let fleet = api
            .get("/api/metrics/fleet?metric=processes.count&top=5")
            .await?
            .expect(200)?;
        let entry = fleet
            .as_array()
            .and_then(|a| a.first())
            .context("fleet entry")?;
        assert_eq!(entry["agent_id"], agent.id.to_string(), "[{backend}]");
        assert!(entry["value"].as_f64().unwrap_or(0.0) >= 1.0);

        // Bad input: 400 with the error body, never a 500.
        let now = now_ms();
        // One name more than allowed (all distinct, all in the catalog).
        let many = reap3r_actors::metrics::Metric::ALL
            .iter()
            .take(reap3r_actors::metrics::MAX_QUERY_NAMES + 1)
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let bad = [
            series_path(agent.id, "cpu.percnt", now - 1000, now, 1),
            series_path(agent.id, "cpu.percent", now, now - 1000, 1),
            series_path(agent.id, "cpu.percent", now - 1000, now, 0),
            series_path(agent.id, "cpu.percent", now - 86_400_000, now, 1),
            series_path(agent.id, &many, now - 1000, now, 1),
            format!(
                "/api/agents/{}/metrics?names=cpu.percent&from=x&to=1&step=1",
                agent.id
            ),
            "/api/metrics/fleet?metric=nope".to_string(),
            "/api/metrics/fleet?metric=cpu.percent&top=0".to_string(),
        ];
        for path in bad {
            let code = api.get(&path).await?.error(400);
            assert!(code.is_ok(), "[{backend}] {path}: {code:?}");
        }
        // Another agent id is not found.
        let missing = series_path(Uuid::new_v4(), "cpu.percent", now - 1000, now, 1);
        api.get(&missing).await?.error(404)?;
        drop((server, agent));
    }
    Ok(())
}

#[tokio::test]
async fn samples_buffered_while_the_server_is_down_arrive_after_the_restart() -> Result<()> {
    for backend in backends().await? {
        let Rig {
            mut server,
            agent,
            api,
        } = rig(backend).await?;
        let from = now_ms();
        eventually("a first sample", WAIT, || {
            let api = api.clone();
            async move { Ok((!sample_times(&api, agent.id, from).await?.is_empty()).then_some(())) }
        })
        .await?;
        server.stop().await;
        let down = now_ms();
        // The outage has to last for the agent to take samples in it: a wait for wall time, not
        // for a state (nothing can be polled while the server is down).
        tokio::time::sleep(Duration::from_secs(u64::from(INTERVAL_S) * 3)).await;
        let up = now_ms();
        server.restart().await?;
        let api = logged_in(
            &server,
            default_org(&server).await?.id,
            "ops2@example.com",
            "org_admin",
        )
        .await?;
        let times = eventually("samples of the outage", WAIT, || {
            let api = api.clone();
            async move {
                let times = sample_times(&api, agent.id, from).await?;
                let after = times.iter().any(|t| *t > up + 1_000);
                Ok(after.then_some(times))
            }
        })
        .await?;
        let in_outage = times.iter().filter(|t| **t > down && **t < up).count();
        assert!(
            in_outage >= 2,
            "[{backend}] {in_outage} samples in the outage: {times:?}"
        );
        // No gap: consecutive samples at most about one interval apart (timer slack allowed).
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            if gap > i64::from(INTERVAL_S) * 1000 + 2_500 {
                bail!("[{backend}] gap of {gap} ms in {times:?} (down {down}, up {up})");
            }
        }
        drop((server, agent));
    }
    Ok(())
}
