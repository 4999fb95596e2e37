//! Alert rules end to end: the rules API refuses bad input with 400s and keeps rules per
//! organisation; with a real server process and a real agent process, a job-failed rule fires
//! for a failing script and resolves on a passing one, an offline rule fires
//! once the killed agent has been gone for its duration (visible in the API and on the
//! WebSocket), is acknowledged and resolves when the agent is back, and a server restart the
//! agent comes back from raises no offline alert.
//!
//! A threshold rule fed by the agent's own metrics (`processes.count > 0`) needs the metrics
//! writer, which hands committed samples to alerting; that part is covered by
//! `actors/tests/alerting.rs` through the `SampleSink` until the metrics work is merged.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::api_harness::{Api, default_org, id_of, logged_in};
use crate::api_ws::{connect, wait_event};
use crate::harness::{TestServer, backends, eventually};
use crate::jobs::{create, script_job, wait_job};
use crate::server_process::{Heartbeats, ServerProcess};

const WAIT: Duration = Duration::from_secs(60);

fn offline_rule(name: &str, for_s: u32) -> Value {
    json!({
        "name": name,
        "severity": "critical",
        "condition": { "kind": "agent_offline", "for_s": for_s },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerting_rules_api_refuses_bad_input_and_is_per_org() -> Result<()> {
    for backend in backends().await? {
        let server = TestServer::start(backend).await?;
        let org = default_org(&server).await?.id;
        let admin = logged_in(&server, org, "alerts-admin@test", "org_admin").await?;
        let threshold = |metric: &str, window_s: u32| {
            json!({
                "name": "cpu",
                "severity": "warning",
                "condition": {
                    "kind": "metric_threshold", "metric": metric, "operator": ">",
                    "value": 90.0, "aggregation": "avg", "window_s": window_s, "for_s": 300,
                },
            })
        };
        let bad = [
            (threshold("cpu.percnt", 60), "unknown_metric"),
            (threshold("cpu.percent", 0), "invalid_duration"),
            (offline_rule("off", 5), "invalid_duration"),
            (
                json!({ "name": "x", "severity": "info",
                        "condition": { "kind": "agent_offline", "for_s": 9_999_999 } }),
                "bad_request",
            ),
            (
                json!({ "name": "x", "severity": "info",
                        "condition": { "kind": "metric_threshold", "metric": "cpu.percent" } }),
                "invalid_input",
            ),
            (
                json!({ "name": "x", "severity": "info",
                        "condition": { "kind": "metric_threshold", "metric": "cpu.percent",
                                       "operator": "=>", "value": 1.0, "aggregation": "last",
                                       "window_s": 60 } }),
                "invalid_input",
            ),
            (
                json!({ "name": "x", "severity": "loud",
                        "condition": { "kind": "agent_offline", "for_s": 60 } }),
                "bad_request",
            ),
            (
                json!({ "name": "x", "severity": "info",
                        "condition": { "kind": "agent_offline", "for_s": 60 },
                        "scope": { "tags": vec![uuid::Uuid::nil(); 101] } }),
                "bad_request",
            ),
        ];
        for (body, code) in bad {
            let reply = admin.post("/api/alerting/rules", body.clone()).await?;
            assert_eq!(reply.error(400)?, code, "{body}");
        }

        let created = admin
            .post("/api/alerting/rules", threshold("disk.used_percent", 300))
            .await?
            .expect(200)?;
        let id = id_of(&created)?;
        assert_eq!(created["condition"]["metric"], "disk.used_percent");
        assert_eq!(created["enabled"], true);
        let dup = admin
            .post("/api/alerting/rules", threshold("cpu.percent", 60))
            .await?;
        assert_eq!(dup.error(409)?, "conflict");
        let patched = admin
            .patch(
                &format!("/api/alerting/rules/{id}"),
                json!({ "enabled": false, "severity": "critical" }),
            )
            .await?
            .expect(200)?;
        assert_eq!(
            (&patched["enabled"], &patched["severity"]),
            (&json!(false), &json!("critical"))
        );
        let list = admin.get("/api/alerting/rules").await?.expect(200)?;
        assert_eq!(list.as_array().map(Vec::len), Some(1));

        // Another organisation sees none of it.
        let other = reap3r_actors::orgs::CreateOrg {
            name: "Elsewhere".into(),
            parent_org_id: None,
        }
        .run(
            &server.node().api.domain,
            &reap3r_actors::access::Caller::cli(org),
        )
        .await?;
        let outsider = logged_in(&server, other.id, "alerts-out@test", "org_admin").await?;
        assert_eq!(
            outsider
                .get(&format!("/api/alerting/rules/{id}"))
                .await?
                .error(404)?,
            "not_found"
        );
        let none = outsider.get("/api/alerting/events").await?.expect(200)?;
        assert_eq!(none["items"], json!([]));

        let unknown = uuid::Uuid::new_v4();
        assert_eq!(
            admin
                .get(&format!("/api/alerting/events/{unknown}"))
                .await?
                .error(404)?,
            "not_found"
        );
        assert_eq!(
            admin
                .post(
                    &format!("/api/alerting/events/{unknown}/snooze"),
                    json!({ "for_s": 0 })
                )
                .await?
                .error(400)?,
            "bad_request"
        );
        assert_eq!(
            admin
                .get("/api/alerting/events?state=bogus")
                .await?
                .error(400)?,
            "bad_request"
        );
        assert_eq!(
            admin
                .get("/api/alerting/events?before=nonsense")
                .await?
                .error(400)?,
            "invalid_input"
        );
        let stats = admin.get("/api/alerting/stats").await?.expect(200)?;
        assert_eq!(stats["open"], 0);
        admin
            .delete(&format!("/api/alerting/rules/{id}"))
            .await?
            .expect(200)?;
        assert_eq!(
            admin
                .get(&format!("/api/alerting/rules/{id}"))
                .await?
                .error(404)?,
            "not_found"
        );
    }
    Ok(())
}

async fn events(api: &Api, state: &str) -> Result<Vec<Value>> {
    let page = api
        .get(&format!("/api/alerting/events?state={state}"))
        .await?
        .expect(200)?;
    Ok(page["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerting_with_a_real_agent_job_failure_offline_and_no_alert_after_a_restart() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::new(dir.path(), Heartbeats::Quick)?;
    let (api, mut agents) = server.start_with_fleet(1).await?;
    let agent_id = agents[0].id;
    let rule = api
        .post("/api/alerting/rules", offline_rule("agent down", 10))
        .await?
        .expect(200)?;
    let rule_id = id_of(&rule)?;
    let mut ws = connect(&api, false).await?;

    // A failing script fires a job-failed rule for run_script jobs; a later success resolves it.
    let job_rule = api
        .post(
            "/api/alerting/rules",
            json!({ "name": "scripts fail", "severity": "warning",
                    "condition": { "kind": "job_failed", "job_type": "run_script" } }),
        )
        .await?
        .expect(200)?;
    let job_rule_id = id_of(&job_rule)?;
    let job_events = |state: &'static str| {
        let api = api.clone();
        async move {
            let page = api
                .get(&format!(
                    "/api/alerting/events?rule_id={job_rule_id}&state={state}"
                ))
                .await?
                .expect(200)?;
            Ok::<_, anyhow::Error>(page["items"].as_array().cloned().unwrap_or_default())
        }
    };
    let failing = create(&api, script_job(&[agent_id], "exit 3", 30)).await?;
    wait_job(&api, failing, "the failing job", |j| {
        j["status"] == "completed"
    })
    .await?;
    eventually("the job-failed alert", WAIT, || async {
        Ok((job_events("firing").await?.len() == 1).then_some(()))
    })
    .await?;
    let fired = wait_event(&mut ws, "alert_fired for the job", |e| {
        e["type"] == "alert_fired" && e["rule_id"] == job_rule_id.to_string()
    })
    .await?;
    assert_eq!(fired["agent_id"], agent_id.to_string());
    let passing = create(&api, script_job(&[agent_id], "true", 30)).await?;
    wait_job(&api, passing, "the passing job", |j| {
        j["status"] == "completed"
    })
    .await?;
    eventually("the job-failed alert resolved", WAIT, || async {
        Ok((job_events("resolved").await?.len() == 1).then_some(()))
    })
    .await?;

    // Killed: offline after the heartbeat timeout, then firing once it has been gone 10 s.
    agents[0].kill().await?;
    let firing = eventually("the offline alert to fire", WAIT, || async {
        let firing = events(&api, "firing").await?;
        Ok((!firing.is_empty()).then_some(firing))
    })
    .await?;
    assert_eq!(firing.len(), 1, "{firing:?}");
    let event_id = id_of(&firing[0])?;
    let fired = wait_event(&mut ws, "alert_fired", |e| {
        e["type"] == "alert_fired" && e["rule_id"] == rule_id.to_string()
    })
    .await?;
    assert_eq!(fired["agent_id"], agent_id.to_string());
    assert_eq!(fired["rule_id"], rule_id.to_string());
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["event_id"], event_id.to_string());

    let acked = api
        .post(&format!("/api/alerting/events/{event_id}/ack"), json!({}))
        .await?
        .expect(200)?;
    assert_eq!(acked["acked_by"], "user:ops@example.com");
    let ack = wait_event(&mut ws, "alert_acked", |e| e["type"] == "alert_acked").await?;
    assert_eq!(ack["event_id"], event_id.to_string());
    let again = api
        .post(&format!("/api/alerting/events/{event_id}/ack"), json!({}))
        .await?;
    assert_eq!(again.error(409)?, "conflict");
    let stats = api.get("/api/alerting/stats").await?.expect(200)?;
    assert_eq!(
        (&stats["acked"], &stats["critical"]),
        (&json!(1), &json!(1))
    );

    // Back: resolved by the system.
    agents[0].start()?;
    let resolved = wait_event(&mut ws, "alert_resolved", |e| {
        e["type"] == "alert_resolved" && e["event_id"] == event_id.to_string()
    })
    .await?;
    assert_eq!(
        (&resolved["event_id"], &resolved["by"]),
        (&json!(event_id.to_string()), &json!("system"))
    );
    let detail = api
        .get(&format!("/api/alerting/events/{event_id}"))
        .await?
        .expect(200)?;
    let actions: Vec<&str> = detail["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(actions, ["pending", "fired", "acked", "resolved"]);

    // A restart the agent comes back from: the node's downtime is not the agent's.
    server.sigterm().await?;
    let restarted = Instant::now();
    server.start().await?;
    eventually("the agent back after the restart", WAIT, || async {
        let stats = api.get("/api/agents/stats").await?.expect(200)?;
        Ok((stats["online"] == 1).then_some(()))
    })
    .await?;
    // Watch past the point where an offline alert would have fired (restart grace of
    // 3 heartbeats + `for` of 10 s after the node started, plus margin).
    eventually(
        "the window an offline alert would fire in",
        WAIT,
        || async { Ok((restarted.elapsed() > Duration::from_secs(20)).then_some(())) },
    )
    .await?;
    let firing = events(&api, "firing").await?;
    assert!(
        firing.is_empty(),
        "a restart raised an offline alert: {firing:?}"
    );
    let all = api
        .get(&format!("/api/alerting/events?rule_id={rule_id}"))
        .await?
        .expect(200)?;
    let fired: Vec<&Value> = all["items"]
        .as_array()
        .map(|v| v.iter().filter(|e| !e["fired_at"].is_null()).collect())
        .unwrap_or_default();
    assert_eq!(fired.len(), 1, "only the real outage fired: {all}");
    server.sigterm().await?;
    Ok(())
}
