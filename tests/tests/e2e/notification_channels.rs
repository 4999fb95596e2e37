//! Every notification channel against a real local receiver, through the real server: SMTP
//! over STARTTLS and implicit TLS with AUTH, verified against a private CA given on the
//! integration (a wrong CA, no CA or a wrong name fails delivery with the reason visible; a
//! wrong password shows the server's 535); Slack, Teams and Discord payloads as their services
//! take them, delivered by the notifier from the outbox; and SMTP hosts that resolve to
//! loopback refused when saved and again at send time.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reap3r_actors::notify::{NotificationAlert, NotificationKind, NotificationMessage, outbox};
use reap3r_testkit::{
    ReceivedMail, SmtpOptions, SmtpReceiver, SmtpTlsMode, TestCa, WebhookReceiver,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api_harness::{Api, default_org, id_of, logged_in, now_ms};
use crate::harness::{TestServer, backends};
use crate::notifications::{attempted, queue_test, test_now};

const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "mailer";
const PASS: &str = "smtp-pass-0123";

async fn admin(server: &TestServer) -> Result<Api> {
    let org = default_org(server).await?;
    logged_in(server, org.id, "channels@example.com", "org_admin").await
}

fn credentials() -> SmtpOptions {
    SmtpOptions {
        credentials: Some((USER.into(), PASS.into())),
    }
}

/// An email integration for `smtp`, trusting `ca_pem` (or the public roots with `None`).
fn email_body(name: &str, smtp: &SmtpReceiver, security: &str, ca_pem: Option<&str>) -> Value {
    let mut email = json!({
        "host": smtp.host(), "port": smtp.port(), "security": security,
        "username": USER, "from": "Reap3r <reap3r@example.com>", "to": ["ops@example.com"]
    });
    if let Some(pem) = ca_pem {
        email["ca_pem"] = json!(pem);
    }
    json!({ "name": name, "kind": "email", "email": email, "smtp_password": PASS })
}

async fn create(api: &Api, body: Value) -> Result<Uuid> {
    let created = api
        .post("/api/alerting/integrations", body.clone())
        .await?
        .expect(200)
        .with_context(|| format!("create {body}"))?;
    id_of(&created)
}

fn check_mail(mail: &ReceivedMail, notification: &str) -> Result<()> {
    ensure!(mail.tls, "not over TLS: {mail:?}");
    ensure!(mail.user.as_deref() == Some(USER), "{mail:?}");
    ensure!(mail.to == ["ops@example.com"], "{mail:?}");
    ensure!(
        mail.has_part("text/plain") && mail.has_part("text/html"),
        "{}",
        mail.data
    );
    ensure!(
        mail.header("X-Reap3r-Notification-Id").as_deref() == Some(notification),
        "{mail:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_over_starttls_and_implicit_tls_with_auth_trusting_a_private_ca() -> Result<()> {
    let ca = TestCa::new("Reap3r e2e mail CA").map_err(anyhow::Error::msg)?;
    let cert = ca.issue(&["127.0.0.1"]).map_err(anyhow::Error::msg)?;
    for backend in backends().await? {
        // Loopback receivers need the setting; it lifts no TLS check.
        let server = TestServer::start_with(backend, |c| c.alerting_allow_loopback = true).await?;
        let api = admin(&server).await?;
        let starttls = SmtpReceiver::start_tls(credentials(), SmtpTlsMode::Starttls, &cert).await?;
        let implicit = SmtpReceiver::start_tls(credentials(), SmtpTlsMode::Implicit, &cert).await?;

        let created = api
            .post(
                "/api/alerting/integrations",
                email_body("submission", &starttls, "starttls", Some(&ca.pem())),
            )
            .await?
            .expect(200)?;
        ensure!(created["email"]["ca_pem"] == ca.pem().as_str(), "{created}");
        let submission = id_of(&created)?;
        let (delivered, answer, id) = test_now(&api, submission).await?;
        ensure!(
            delivered && answer.starts_with("250"),
            "{backend:?}: {answer}"
        );
        let mails = starttls
            .wait_for(1, WAIT)
            .await
            .map_err(anyhow::Error::msg)?;
        check_mail(&mails[0], &id)?;

        // Implicit TLS, delivered by the notifier from the outbox.
        let smtps = create(&api, email_body("smtps", &implicit, "tls", Some(&ca.pem()))).await?;
        let queued = queue_test(&api, smtps).await?;
        let mails = implicit
            .wait_for(1, WAIT)
            .await
            .map_err(anyhow::Error::msg)?;
        check_mail(&mails[0], &queued)?;
        let row = attempted(&api, smtps, &queued).await?;
        ensure!(row["state"] == "delivered", "{row}");
        ensure!(
            row["last_answer"]
                .as_str()
                .is_some_and(|a| a.starts_with("250")),
            "{row}"
        );

        // A wrong password: the server's answer is the reported failure, now and in the log.
        api.patch(
            &format!("/api/alerting/integrations/{submission}"),
            json!({ "smtp_password": "not-the-password" }),
        )
        .await?
        .expect(200)?;
        let (delivered, answer, _) = test_now(&api, submission).await?;
        ensure!(!delivered, "{answer}");
        ensure!(
            answer.contains("535") && answer.contains("Authentication credentials invalid"),
            "{backend:?}: {answer}"
        );
        let queued = queue_test(&api, submission).await?;
        let row = attempted(&api, submission, &queued).await?;
        ensure!(row["state"] == "pending", "retried later: {row}");
        ensure!(
            row["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("535")),
            "{row}"
        );
        ensure!(starttls.mails().len() == 1, "{:?}", starttls.mails());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_certificate_verification_stays_on_and_bad_ca_pem_is_a_400() -> Result<()> {
    let ca = TestCa::new("Reap3r e2e mail CA").map_err(anyhow::Error::msg)?;
    let other = TestCa::new("Somebody else's CA").map_err(anyhow::Error::msg)?;
    let right = ca.issue(&["127.0.0.1"]).map_err(anyhow::Error::msg)?;
    let misnamed = ca
        .issue(&["mail.example.test"])
        .map_err(anyhow::Error::msg)?;
    for backend in backends().await? {
        let server = TestServer::start_with(backend, |c| c.alerting_allow_loopback = true).await?;
        let api = admin(&server).await?;
        let good = SmtpReceiver::start_tls(credentials(), SmtpTlsMode::Starttls, &right).await?;
        let wrong_name =
            SmtpReceiver::start_tls(credentials(), SmtpTlsMode::Implicit, &misnamed).await?;

        let cases = [
            // Another CA, the public roots, and the right CA with a certificate for another name.
            (
                email_body("wrong ca", &good, "starttls", Some(&other.pem())),
                "UnknownIssuer",
            ),
            (
                email_body("public roots", &good, "starttls", None),
                "UnknownIssuer",
            ),
            (
                email_body("wrong name", &wrong_name, "tls", Some(&ca.pem())),
                "not valid for name",
            ),
        ];
        for (body, why) in cases {
            let id = create(&api, body.clone()).await?;
            let (delivered, answer, _) = test_now(&api, id).await?;
            ensure!(
                !delivered && answer.contains(why),
                "{backend:?} {}: {answer}",
                body["name"]
            );
            let queued = queue_test(&api, id).await?;
            let row = attempted(&api, id, &queued).await?;
            ensure!(
                row["last_error"].as_str().is_some_and(|e| e.contains(why)),
                "{row}"
            );
        }
        ensure!(good.mails().is_empty(), "{:?}", good.mails());
        ensure!(wrong_name.mails().is_empty(), "{:?}", wrong_name.mails());

        let key_only =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let not_a_cert = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
        let bad = [
            ("not a pem at all", "starttls"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "starttls",
            ),
            (key_only, "tls"),
            (not_a_cert, "tls"),
            (&ca.pem(), "plain"),
        ];
        for (pem, security) in bad {
            let reply = api
                .post(
                    "/api/alerting/integrations",
                    email_body("bad", &good, security, Some(pem)),
                )
                .await?;
            let message = reply.body["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            reply
                .error(400)
                .with_context(|| format!("{backend:?}: {pem}"))?;
            ensure!(message.contains("ca_pem"), "{pem}: {message}");
        }
    }
    Ok(())
}

/// A message as routing writes it: two alerts, one with mention syntax in its host name.
fn alert_message(org_id: Uuid) -> NotificationMessage {
    let alert = |host: &str| NotificationAlert {
        event_id: Uuid::now_v7(),
        rule_name: "disk full".into(),
        severity: "critical".into(),
        agent_id: None,
        hostname: Some(host.into()),
        summary: "disk.used_percent[/] avg 300s 97.00 > 90".into(),
        fired_at_ms: now_ms(),
        resolved_at_ms: None,
    };
    NotificationMessage {
        kind: NotificationKind::Firing,
        org_id,
        group_key: "rule=disk full,org=default".into(),
        title: "[critical] disk full: 3 firing".into(),
        severity: "critical".into(),
        total: 3,
        alerts: vec![alert("web-01"), alert("<!channel> @everyone")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_teams_and_discord_get_their_formats_through_the_notifier() -> Result<()> {
    for backend in backends().await? {
        let server = TestServer::start_with(backend, |c| c.alerting_allow_loopback = true).await?;
        let api = admin(&server).await?;
        let org = default_org(&server).await?;
        let hook = WebhookReceiver::start(None).await?;
        let mut ids = Vec::new();
        for kind in ["slack", "teams", "discord"] {
            let created = api
                .post(
                    "/api/alerting/integrations",
                    json!({ "name": kind, "kind": kind, "hook_url": hook.url(&format!("/{kind}")) }),
                )
                .await?
                .expect(200)?;
            ensure!(created["hook_url_set"] == true, "{created}");
            ensure!(
                !created.to_string().contains(&hook.url("")),
                "hook URL shown: {created}"
            );
            ids.push((kind, id_of(&created)?));
        }

        // What routing does: enqueue in a transaction, commit, nudge the notifier.
        let domain = &server.node().api.domain;
        let mut queued = Vec::new();
        let mut tx = domain.begin().await?;
        for (kind, id) in &ids {
            let n = outbox::enqueue(&mut tx, org.id, *id, &alert_message(org.id), now_ms()).await?;
            queued.push((*kind, *id, n.to_string()));
        }
        domain.commit(tx).await?;
        outbox::nudge();

        let got = hook.wait_for(3, WAIT).await.map_err(anyhow::Error::msg)?;
        let request = |kind: &str| {
            got.iter()
                .find(|r| r.path == format!("/{kind}"))
                .with_context(|| format!("no {kind} request in {got:?}"))
        };
        for (kind, integration, notification) in &queued {
            let r = request(kind)?;
            ensure!(r.method == "POST", "{r:?}");
            ensure!(
                r.header("content-type") == Some("application/json"),
                "{r:?}"
            );
            ensure!(
                r.header("x-reap3r-notification-id") == Some(notification.as_str()),
                "{r:?}"
            );
            let row = attempted(&api, *integration, notification).await?;
            ensure!(row["state"] == "delivered", "{backend:?} {kind}: {row}");
        }

        let slack = request("slack")?.json().map_err(anyhow::Error::msg)?;
        ensure!(
            slack["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("*[critical] disk full: 3 firing*")),
            "{slack}"
        );
        ensure!(slack["blocks"][0]["type"] == "header", "{slack}");
        ensure!(
            slack["blocks"][0]["text"]["type"] == "plain_text",
            "{slack}"
        );
        let section = slack["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap_or_default();
        ensure!(section.contains("web-01"), "{slack}");
        ensure!(section.contains("… and 1 more"), "{slack}");
        ensure!(
            !slack.to_string().contains("<!channel>") && section.contains("&lt;!channel&gt;"),
            "a host name can mention the channel: {slack}"
        );

        let teams = request("teams")?.json().map_err(anyhow::Error::msg)?;
        ensure!(teams["@type"] == "MessageCard", "{teams}");
        ensure!(
            teams["@context"] == "https://schema.org/extensions",
            "{teams}"
        );
        ensure!(teams["themeColor"] == "D03030", "{teams}");
        ensure!(
            teams["title"] == "[critical] disk full: 3 firing",
            "{teams}"
        );
        ensure!(
            teams["text"].as_str().is_some_and(|t| t.contains("web-01")),
            "{teams}"
        );

        let discord = request("discord")?.json().map_err(anyhow::Error::msg)?;
        ensure!(
            discord["content"] == "[critical] disk full: 3 firing",
            "{discord}"
        );
        ensure!(discord["embeds"][0]["color"] == 0xd0_30_30, "{discord}");
        ensure!(
            discord["embeds"][0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("web-01") && d.contains("@everyone")),
            "{discord}"
        );
        ensure!(
            discord["allowed_mentions"]["parse"] == json!([]),
            "{discord}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_hosts_resolving_to_loopback_are_refused_when_saved_and_when_sent() -> Result<()> {
    // "127.1" is a name to the host check, and the system resolver (no DNS server involved)
    // turns it into 127.0.0.1: what a DNS name pointed at loopback looks like at send time.
    for backend in backends().await? {
        let smtp = SmtpReceiver::start(credentials()).await?;
        let mut body = email_body("sneaky", &smtp, "plain", None);
        body["email"]["host"] = json!("127.1");

        // With the setting, the name reaches the receiver: a later refusal is the check.
        let mut server =
            TestServer::start_with(backend, |c| c.alerting_allow_loopback = true).await?;
        let api = admin(&server).await?;
        let id = create(&api, body.clone()).await?;
        let (delivered, answer, _) = test_now(&api, id).await?;
        ensure!(delivered, "{backend:?}: {answer}");
        smtp.wait_for(1, WAIT).await.map_err(anyhow::Error::msg)?;

        // Without it: refused at send time, on the resolved address, and in the log.
        server.config.alerting_allow_loopback = false;
        server.restart().await?;
        let api = Api::new(&server)
            .login("channels@example.com", crate::api_harness::PASSWORD)
            .await?
            .0;
        let (delivered, answer, _) = test_now(&api, id).await?;
        ensure!(
            !delivered && answer.contains("127.1 resolves to 127.0.0.1"),
            "{backend:?}: {answer}"
        );
        let queued = queue_test(&api, id).await?;
        let row = attempted(&api, id, &queued).await?;
        ensure!(
            row["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("resolves to 127.0.0.1")),
            "{row}"
        );
        ensure!(smtp.mails().len() == 1, "{:?}", smtp.mails());

        // And when saved (STARTTLS, so the refusal is the address, not plain SMTP).
        body["email"]["security"] = json!("starttls");
        let reply = api.post("/api/alerting/integrations", body).await?;
        let message = reply.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        reply.error(400)?;
        ensure!(message.contains("resolves to 127.0.0.1"), "{message}");
    }
    Ok(())
}
