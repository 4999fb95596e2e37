//! Serving: health and readiness, the served spec equal to the generated one, and Prometheus
//! metrics that move with what happens.

use anyhow::Result;
use reap3r_store::Backend;
use serde_json::Value;

use crate::api_harness::Api;
use crate::harness::TestServer;

#[tokio::test]
async fn health_ready_spec_and_metrics_are_served() -> Result<()> {
    let mut server = TestServer::start(Backend::Sqlite).await?;
    let api = Api::new(&server);
    let health = api.get("/api/health").await?.expect(200)?;
    assert_eq!(health["status"], "ok");
    let ready = api.get("/api/ready").await?.expect(200)?;
    assert_eq!(ready["database"], true);
    assert_eq!(ready["quic"], true);

    let served: Value = api.get("/api/openapi.json").await?.expect(200)?;
    let generated: Value = serde_json::from_str(&reap3r_api::openapi_json())?;
    assert_eq!(served, generated);

    // A refused request shows up as an auth failure and in the latency histogram.
    api.get("/api/agents").await?.error(401)?;
    // A failed login is one failure, not two (handler and guard both see it).
    api.post(
        "/api/auth/login",
        serde_json::json!({ "email": "nobody@test", "password": "wrong password" }),
    )
    .await?
    .error(401)?;
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await?
        .text()
        .await?;
    for needle in [
        "reap3r_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/health\",status=\"200\",le=\"+Inf\"} 1",
        "reap3r_http_request_duration_seconds_count{method=\"GET\",route=\"/api/agents\",status=\"401\"} 1",
        "reap3r_auth_failures_total 2",
        "reap3r_agents_connected 0",
        "reap3r_actor_restarts_total 0",
        "reap3r_agent_messages_in_total",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }

    // Shutdown closes the HTTP listener too: a stopped node answers nothing.
    let base = api.base.clone();
    server.stop().await;
    assert!(reqwest::get(format!("{base}/api/health")).await.is_err());
    Ok(())
}
