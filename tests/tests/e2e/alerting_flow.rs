//! Alerting end to end, every part real: a real agent process samples metrics every 5 s; a
//! threshold rule on its `uptime.seconds` fires; notification routing groups it and the notifier
//! delivers it to a real local SMTP server and a real local webhook receiver (whose HMAC
//! verifies); an operator acknowledges it through the API, so the escalation step due a minute
//! after the notification never reaches its receiver; the condition clears by itself (uptime
//! passes the threshold) and the resolution is delivered to both channels.
//!
//! The threshold is "uptime below now + 100 s": true from the first sample, false about 100 s
//! later, with no way for the test to steer the agent's readings.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reap3r_store::{AgentStatus, Uuid};
use reap3r_testkit::{ReceivedRequest, SmtpOptions, SmtpReceiver, WebhookReceiver};
use serde_json::{Value, json};

use crate::api_harness::{Api, default_org, id_of, logged_in};
use crate::harness::{AgentProcess, TestServer, backends, eventually};

const SECRET: &str = "flow-webhook-secret-0123456789";
/// How long the condition holds after the rule is created.
const FIRING_FOR_S: f64 = 100.0;
const WAIT: Duration = Duration::from_secs(60);

fn machine_uptime_s() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/uptime")?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("unreadable /proc/uptime")
}

async fn integration(api: &Api, body: Value) -> Result<Uuid> {
    id_of(
        &api.post("/api/alerting/integrations", body)
            .await?
            .expect(200)?,
    )
}

fn with_kind<'a>(requests: &'a [ReceivedRequest], kind: &str) -> Vec<&'a ReceivedRequest> {
    requests
        .iter()
        .filter(|r| r.json().is_ok_and(|v| v["kind"] == kind))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerting_threshold_fires_notifies_is_acked_without_escalation_and_resolves() -> Result<()>
{
    for backend in backends().await? {
        let server = TestServer::start_with(backend, |c| {
            c.metrics_interval_s = 5;
            c.alerting_allow_loopback = true;
        })
        .await?;
        let token = server.token(false, Some(1), "1h").await?;
        let mut agent = AgentProcess::enrol(server.dir.path(), "flow", &token).await?;
        agent.start()?;
        server
            .wait_status(agent.id, AgentStatus::Online, Duration::from_secs(20))
            .await?;
        let org = default_org(&server).await?;
        let api = logged_in(&server, org.id, "flow@example.com", "org_admin").await?;

        let smtp = SmtpReceiver::start(SmtpOptions { credentials: None }).await?;
        let hook = WebhookReceiver::start(Some(SECRET.as_bytes())).await?;
        let mail = integration(
            &api,
            json!({
                "name": "on-call mail", "kind": "email",
                "email": { "host": smtp.host(), "port": smtp.port(), "security": "plain",
                           "from": "reap3r@example.com", "to": ["oncall@example.com"] },
            }),
        )
        .await?;
        let webhook = integration(
            &api,
            json!({ "name": "pager", "kind": "webhook", "url": hook.url("/alerts"),
                    "webhook_secret": SECRET }),
        )
        .await?;
        let escalation = integration(
            &api,
            json!({ "name": "manager", "kind": "webhook", "url": hook.url("/escalation"),
                    "webhook_secret": SECRET }),
        )
        .await?;
        api.post(
            "/api/alerting/policies",
            json!({
                "name": "critical to on-call",
                "severities": ["critical"],
                "integrations": [mail, webhook],
                "group_wait_s": 5,
                "group_interval_s": 10,
                "escalation": [{ "after_minutes": 1, "integrations": [escalation] }],
            }),
        )
        .await?
        .expect(200)?;
        let threshold = machine_uptime_s()? + FIRING_FOR_S;
        api.post(
            "/api/alerting/rules",
            json!({
                "name": "fresh machine",
                "severity": "critical",
                "condition": { "kind": "metric_threshold", "metric": "uptime.seconds",
                               "operator": "<", "value": threshold, "aggregation": "last",
                               "window_s": 60 },
            }),
        )
        .await?
        .expect(200)?;

        // Fired, grouped, delivered to both channels; the webhook is signed.
        let firing = hook.wait_for(1, WAIT).await.map_err(anyhow::Error::msg)?;
        let firing = with_kind(&firing, "firing");
        ensure!(firing.len() == 1, "{backend:?}: {firing:?}");
        ensure!(firing[0].path == "/alerts", "{:?}", firing[0]);
        ensure!(firing[0].signature_valid == Some(true), "{:?}", firing[0]);
        let body = firing[0].json().map_err(anyhow::Error::msg)?;
        ensure!(body["total"] == 1, "{body}");
        ensure!(body["alerts"][0]["agent_id"] == json!(agent.id), "{body}");
        let mails = smtp.wait_for(1, WAIT).await.map_err(anyhow::Error::msg)?;
        ensure!(mails[0].to == ["oncall@example.com"], "{:?}", mails[0]);
        ensure!(mails[0].data.contains("fresh machine"), "{}", mails[0].data);

        // Acknowledged: the escalation step (1 minute after the notification) never comes.
        let open = api
            .get("/api/alerting/events?state=firing")
            .await?
            .expect(200)?;
        let event = id_of(&open["items"][0])?;
        let acked = api
            .post(&format!("/api/alerting/events/{event}/ack"), json!({}))
            .await?
            .expect(200)?;
        ensure!(acked["acked_by"].is_string(), "{acked}");

        // The condition clears by itself; the resolution reaches both channels.
        eventually("the alert to resolve", Duration::from_secs(150), || async {
            let e = api
                .get(&format!("/api/alerting/events/{event}"))
                .await?
                .expect(200)?;
            Ok((e["event"]["state"] == "resolved").then_some(()))
        })
        .await?;
        let all = hook.wait_for(2, WAIT).await.map_err(anyhow::Error::msg)?;
        let resolved = with_kind(&all, "resolved");
        ensure!(resolved.len() == 1, "{backend:?}: {all:?}");
        ensure!(resolved[0].path == "/alerts", "{:?}", resolved[0]);
        ensure!(
            resolved[0].signature_valid == Some(true),
            "{:?}",
            resolved[0]
        );
        smtp.wait_for(2, WAIT).await.map_err(anyhow::Error::msg)?;
        // By now the escalation was due for more than a minute: it was stopped by the ack.
        ensure!(
            hook.requests().iter().all(|r| r.path != "/escalation"),
            "{backend:?}: escalated after the ack: {:?}",
            hook.requests()
        );
        agent.kill().await?;
    }
    Ok(())
}
