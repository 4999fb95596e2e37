//! Alerting integrations end to end, against real local receivers (reap3r-testkit's SMTP server
//! and HTTP webhook receiver): created through the API, `/test` reports the receiver's answer,
//! the mail arrives with plain and HTML parts, the webhook's HMAC verifies, secrets never come
//! back; bad receivers are 400s with the error body; and a notification queued while its
//! receiver is down survives a SIGKILL of the server and is delivered after the restart under
//! the same idempotency id.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reap3r_testkit::{SmtpOptions, SmtpReceiver, WebhookReceiver};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api_harness::{Api, PASSWORD, default_org, id_of, logged_in};
use crate::harness::{TestServer, backends, eventually};
use crate::server_process::{Heartbeats, ServerProcess};

const SECRET: &str = "e2e-webhook-secret-0123456789";
const WAIT: Duration = Duration::from_secs(30);

async fn admin(server: &TestServer) -> Result<Api> {
    let org = default_org(server).await?;
    logged_in(server, org.id, "alerts@example.com", "org_admin").await
}

fn webhook_body(url: &str) -> Value {
    json!({ "name": "hook", "kind": "webhook", "url": url, "webhook_secret": SECRET })
}

/// `POST …/test` (sent now): whether it was delivered, and the receiver's answer.
pub(crate) async fn test_now(api: &Api, id: Uuid) -> Result<(bool, String, String)> {
    let sent = api
        .post(&format!("/api/alerting/integrations/{id}/test"), json!({}))
        .await?
        .expect(200)?;
    Ok((
        sent["delivered"] == true,
        sent["answer"].as_str().unwrap_or_default().to_owned(),
        sent["notification_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// Queues a test message for the notifier; its notification id.
pub(crate) async fn queue_test(api: &Api, id: Uuid) -> Result<String> {
    let queued = api
        .post(
            &format!("/api/alerting/integrations/{id}/test?queue=true"),
            json!({}),
        )
        .await?
        .expect(200)?;
    ensure!(queued["queued"] == true, "{queued}");
    Ok(queued["notification_id"]
        .as_str()
        .context("notification id")?
        .to_owned())
}

/// Waits for the notifier's first attempt at `notification` to be recorded; the row.
pub(crate) async fn attempted(api: &Api, integration: Uuid, notification: &str) -> Result<Value> {
    let list = format!("/api/alerting/notifications?integration_id={integration}");
    eventually("an attempt recorded", WAIT, || async {
        let rows = api.get(&list).await?.expect(200)?;
        let row = rows
            .as_array()
            .and_then(|r| r.iter().find(|n| n["id"] == notification))
            .cloned();
        Ok(row.filter(|r| r["attempts"].as_i64() >= Some(1) && r["state"] != "sending"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerting_integrations_test_messages_reach_real_receivers() -> Result<()> {
    for backend in backends().await? {
        let server = TestServer::start_with(backend, |c| c.alerting_allow_loopback = true).await?;
        let api = admin(&server).await?;
        let smtp = SmtpReceiver::start(SmtpOptions {
            credentials: Some(("mailer".into(), "smtp-pass".into())),
        })
        .await?;
        let hook = WebhookReceiver::start(Some(SECRET.as_bytes())).await?;

        let email = api
            .post(
                "/api/alerting/integrations",
                json!({
                    "name": "mail",
                    "kind": "email",
                    "email": {
                        "host": smtp.host(), "port": smtp.port(), "security": "plain",
                        "username": "mailer", "from": "Reap3r <reap3r@example.com>",
                        "to": ["ops@example.com"]
                    },
                    "smtp_password": "smtp-pass"
                }),
            )
            .await?
            .expect(200)?;
        ensure!(email["smtp_password_set"] == true, "{email}");
        ensure!(
            !email.to_string().contains("smtp-pass"),
            "secret shown: {email}"
        );
        let email_id = id_of(&email)?;

        let webhook = api
            .post(
                "/api/alerting/integrations",
                webhook_body(&hook.url("/hook")),
            )
            .await?
            .expect(200)?;
        ensure!(webhook["webhook_secret_set"] == true, "{webhook}");
        ensure!(
            !webhook.to_string().contains(SECRET),
            "secret shown: {webhook}"
        );
        let webhook_id = id_of(&webhook)?;
        let listed = api.get("/api/alerting/integrations").await?.expect(200)?;
        ensure!(
            !listed.to_string().contains(SECRET),
            "{backend:?}: secret listed"
        );
        ensure!(listed.as_array().map(Vec::len) == Some(2), "{listed}");

        // Email: the SMTP reply comes back; the mail has both parts.
        let (delivered, answer, notification_id) = test_now(&api, email_id).await?;
        ensure!(delivered, "{answer}");
        ensure!(answer.starts_with("250"), "{answer}");
        let mails = smtp.wait_for(1, WAIT).await.map_err(anyhow::Error::msg)?;
        let mail = &mails[0];
        ensure!(mail.user.as_deref() == Some("mailer"), "{mail:?}");
        ensure!(mail.to == ["ops@example.com"], "{mail:?}");
        ensure!(
            mail.has_part("text/plain") && mail.has_part("text/html"),
            "{}",
            mail.data
        );
        ensure!(
            mail.header("X-Reap3r-Notification-Id").as_deref() == Some(notification_id.as_str()),
            "{mail:?}"
        );

        // Webhook: signed, carrying the idempotency id; a 500 is reported, not hidden.
        let (delivered, answer, notification_id) = test_now(&api, webhook_id).await?;
        ensure!(delivered, "{answer}");
        ensure!(answer.starts_with("HTTP 200"), "{answer}");
        let got = hook.wait_for(1, WAIT).await.map_err(anyhow::Error::msg)?;
        ensure!(got[0].signature_valid == Some(true), "{:?}", got[0]);
        ensure!(got[0].header("x-reap3r-notification-id") == Some(notification_id.as_str()));
        ensure!(got[0].json().map_err(anyhow::Error::msg)?["kind"] == "test");
        hook.answer_with(500);
        let (delivered, answer, _) = test_now(&api, webhook_id).await?;
        ensure!(!delivered, "{answer}");
        ensure!(answer.starts_with("HTTP 500"), "{answer}");

        // Change and delete.
        let changed = api
            .patch(
                &format!("/api/alerting/integrations/{webhook_id}"),
                json!({ "name": "hook2", "enabled": false }),
            )
            .await?
            .expect(200)?;
        ensure!(
            changed["name"] == "hook2" && changed["enabled"] == false,
            "{changed}"
        );
        ensure!(
            changed["webhook_secret_set"] == true,
            "a patch keeps the secret: {changed}"
        );
        ensure!(
            changed["updated_at"].as_i64() >= changed["created_at"].as_i64(),
            "{changed}"
        );
        api.delete(&format!("/api/alerting/integrations/{webhook_id}"))
            .await?
            .expect(200)?;
        api.delete(&format!("/api/alerting/integrations/{webhook_id}"))
            .await?
            .error(404)?;
        let listed = api.get("/api/alerting/integrations").await?.expect(200)?;
        ensure!(listed.as_array().map(Vec::len) == Some(1), "{listed}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerting_integration_bad_receivers_are_400_with_the_error_body() -> Result<()> {
    for backend in backends().await? {
        // Default settings: loopback receivers are not allowed.
        let server = TestServer::start(backend).await?;
        let api = admin(&server).await?;
        let long = format!("https://example.com/{}", "a".repeat(3000));
        let cases = [
            webhook_body("http://127.0.0.1:9/hook"),
            webhook_body("http://localhost:8080/hook"),
            webhook_body("http://169.254.169.254/latest/meta-data/"),
            webhook_body("http://[::1]/"),
            webhook_body("http://metadata.google.internal/"),
            webhook_body("ftp://example.com/hook"),
            webhook_body("not a url"),
            webhook_body(&long),
            json!({ "name": "hook", "kind": "webhook", "url": "https://example.com/h" }),
            json!({ "name": "hook", "kind": "carrier-pigeon", "url": "https://example.com/h" }),
            json!({ "name": "chat", "kind": "slack", "hook_url": "http://127.0.0.1/x" }),
            json!({ "name": "mail", "kind": "email", "email": {
                "host": "127.0.0.1", "port": 25, "from": "a@example.com", "to": ["b@example.com"] } }),
            json!({ "name": "mail", "kind": "email", "email": {
                "host": "smtp.example.com", "security": "plain", "from": "a@example.com", "to": ["b@example.com"] } }),
            json!({ "name": "mail", "kind": "email", "email": {
                "host": "smtp.example.com", "from": "not an address", "to": ["b@example.com"] } }),
        ];
        for body in cases {
            let reply = api.post("/api/alerting/integrations", body.clone()).await?;
            let message = reply.body["message"].clone();
            let code = reply
                .error(400)
                .with_context(|| format!("{backend:?}: {body}"))?;
            ensure!(
                !code.is_empty() && message.is_string(),
                "{body}: {code} {message}"
            );
        }
        let listed = api.get("/api/alerting/integrations").await?.expect(200)?;
        ensure!(listed.as_array().is_some_and(Vec::is_empty), "{listed}");
        let missing = uuid::Uuid::now_v7();
        api.post(
            &format!("/api/alerting/integrations/{missing}/test"),
            json!({}),
        )
        .await?
        .error(404)?;
        api.get("/api/alerting/notifications?state=lost")
            .await?
            .error(400)?;
        api.get("/api/alerting/notifications?limit=0")
            .await?
            .error(400)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerting_notification_queued_before_a_sigkill_is_delivered_after_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::new(dir.path(), Heartbeats::Defaults)?
        .with_env("REAP3R_ALERTING_ALLOW_LOOPBACK", "1");
    server.start().await?;
    server
        .cli(
            &[
                "user",
                "create",
                "--email",
                "ops@example.com",
                "--role",
                "org_admin",
                "--password-stdin",
            ],
            Some(&format!("{PASSWORD}\n")),
        )
        .await?;
    let api = Api::from_base(&format!("http://{}", server.http))
        .login("ops@example.com", PASSWORD)
        .await?
        .0;
    let hook = WebhookReceiver::start(Some(SECRET.as_bytes())).await?;
    hook.stop().await;
    let webhook = api
        .post(
            "/api/alerting/integrations",
            webhook_body(&hook.url("/hook")),
        )
        .await?
        .expect(200)?;
    let webhook_id = id_of(&webhook)?;
    let id = queue_test(&api, webhook_id).await?;

    // The receiver is down: the first attempt fails and the row waits for its retry.
    let failed = attempted(&api, webhook_id, &id).await?;
    ensure!(failed["state"] == "pending", "{failed}");
    ensure!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("attempt 1")),
        "{failed}"
    );

    server.sigkill().await?;
    hook.restart().await?;
    server.start().await?;

    // A claim cut off by the kill would be due again once its lease (30 s) passes.
    let got = hook
        .wait_for(1, 2 * WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        got[0].header("x-reap3r-notification-id") == Some(id.as_str()),
        "{:?}",
        got[0]
    );
    ensure!(got[0].signature_valid == Some(true), "{:?}", got[0]);
    let list = format!("/api/alerting/notifications?integration_id={webhook_id}");
    let delivered = eventually("delivered in the log", WAIT, || async {
        let rows = api.get(&list).await?.expect(200)?;
        let row = rows[0].clone();
        Ok((row["state"] == "delivered").then_some(row))
    })
    .await?;
    ensure!(delivered["id"] == id.as_str(), "{delivered}");
    ensure!(
        hook.requests().len() == 1,
        "delivered once: {:?}",
        hook.requests()
    );
    Ok(())
}
