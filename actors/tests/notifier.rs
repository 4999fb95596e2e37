//! The notifier against real local receivers (reap3r-testkit's webhook and SMTP servers), on
//! every backend: a receiver that is down, then up, gets the notification once; 500 answers
//! are retried with backoff and dead-lettered after the last attempt with the error visible,
//! under one idempotency id; a 429 with `Retry-After` is retried no sooner than asked; a dead
//! letter queued again is delivered under the same id; a
//! slow receiver does not hold up another integration; an attempt cut off by a crash is sent
//! again by the next notifier once its claim expires; email arrives with plain and HTML
//! parts; receivers the SSRF rules forbid are refused. Time is a `ManualClock`: a retry falls
//! due when the test moves the clock and wakes the notifier, never by waiting.

#![expect(
    clippy::unwrap_used,
    reason = "the rig's helpers live outside #[test] functions"
)]

use std::sync::Arc;
use std::time::Duration;

use reap3r_actors::access::Caller;
use reap3r_actors::notify::outbox;
use reap3r_actors::notify::{
    Channels, CreateIntegration, EmailInput, IntegrationKind, NotificationAlert, NotificationKind,
    NotificationMessage, Notifier, NotifierArgs, NotifierMsg, NotifierSettings, NotifySettings,
    RetryNotification, RetryPolicy, SecretsInput, SmtpSecurity, TestIntegration, TestOutcome,
};
use reap3r_actors::{Domain, DomainError, EventBus, ManualClock};
use reap3r_store::{Notification, NotificationState, Uuid};
use reap3r_testkit::{SmtpOptions, SmtpReceiver, TestDatabase, WebhookReceiver};

const T0: u64 = 1_700_000_000_000;
const SECRET: &str = "0123456789abcdef-secret";
const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    _db: TestDatabase,
    domain: Domain,
    clock: ManualClock,
    caller: Caller,
    channels: Channels,
}

async fn rigs() -> Vec<Rig> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let clock = ManualClock::new(T0);
        let domain = Domain::new(
            store,
            Arc::new(clock.clone()),
            EventBus::new(64),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        let org = domain.store.default_org(0).await.unwrap();
        let channels = Channels::new(NotifySettings {
            allow_loopback: true,
        })
        .unwrap();
        out.push(Rig {
            _db: db,
            domain,
            clock,
            caller: Caller::cli(org.id),
            channels,
        });
    }
    out
}

fn policy(max_attempts: i64) -> NotifierSettings {
    NotifierSettings {
        retry: RetryPolicy {
            max_attempts,
            base_backoff_ms: 1_000,
            max_backoff_ms: 4_000,
        },
        ..NotifierSettings::default()
    }
}

fn message(org_id: Uuid) -> NotificationMessage {
    NotificationMessage {
        kind: NotificationKind::Firing,
        org_id,
        group_key: "rule=r,org=o".into(),
        title: "[critical] High CPU: 1 agent firing".into(),
        severity: "critical".into(),
        total: 1,
        alerts: vec![NotificationAlert {
            event_id: Uuid::now_v7(),
            rule_name: "High CPU".into(),
            severity: "critical".into(),
            agent_id: None,
            hostname: Some("web-1".into()),
            summary: "cpu.percent 97 > 90".into(),
            fired_at_ms: T0 as i64,
            resolved_at_ms: None,
        }],
    }
}

impl Rig {
    async fn webhook(&self, name: &str, url: String) -> Uuid {
        CreateIntegration {
            name: name.into(),
            kind: IntegrationKind::Webhook,
            enabled: true,
            email: None,
            url: Some(url),
            secrets: SecretsInput {
                webhook_secret: Some(SECRET.into()),
                ..SecretsInput::default()
            },
        }
        .run(&self.domain, &self.caller, &self.channels)
        .await
        .unwrap()
        .id
    }

    /// A receiver checking [`SECRET`] signatures and the `ops` integration that posts to it.
    async fn signed_hook(&self) -> (WebhookReceiver, Uuid) {
        let hook = WebhookReceiver::start(Some(SECRET.as_bytes()))
            .await
            .unwrap();
        let integration = self.webhook("ops", hook.url("/hook")).await;
        (hook, integration)
    }

    /// What routing does: enqueue in its own transaction, commit, nudge.
    async fn enqueue(&self, integration: Uuid) -> Uuid {
        let mut tx = self.domain.begin().await.unwrap();
        let id = outbox::enqueue(
            &mut tx,
            self.caller.org_id,
            integration,
            &message(self.caller.org_id),
            self.domain.now_ms(),
        )
        .await
        .unwrap();
        self.domain.commit(tx).await.unwrap();
        outbox::nudge();
        id
    }

    async fn notifier(&self, settings: NotifierSettings) -> ractor::ActorRef<NotifierMsg> {
        let (actor, _) = Notifier::spawn(NotifierArgs {
            domain: self.domain.clone(),
            channels: self.channels.clone(),
            settings,
        })
        .await
        .unwrap();
        actor
    }

    async fn row(&self, id: Uuid) -> Notification {
        self.domain
            .store
            .notification(self.caller.org_id, id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Polls the outbox until `done` holds for the row (or fails after [`WAIT`]).
    async fn wait_row(
        &self,
        id: Uuid,
        what: &str,
        done: impl Fn(&Notification) -> bool,
    ) -> Notification {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let row = self.row(id).await;
            if done(&row) {
                return row;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {row:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the clock past the row's next attempt and wakes the notifier.
    fn fall_due(&self, row: &Notification, notifier: &ractor::ActorRef<NotifierMsg>) {
        let now = self.domain.now_ms();
        let step = (row.next_attempt_at - now).max(0) as u64;
        self.clock.advance(step);
        notifier.cast(NotifierMsg::Wake).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_down_then_up_gets_the_notification_once() {
    for rig in rigs().await {
        let (hook, integration) = rig.signed_hook().await;
        hook.stop().await;
        let notifier = rig.notifier(policy(5)).await;
        let id = rig.enqueue(integration).await;

        let failed = rig
            .wait_row(id, "first attempt fails", |r| {
                r.attempts == 1 && r.state == NotificationState::Pending
            })
            .await;
        let error = failed.last_error.clone().unwrap_or_default();
        assert!(error.starts_with("attempt 1: "), "{error}");
        assert!(
            failed.next_attempt_at > rig.domain.now_ms(),
            "backed off: {failed:?}"
        );

        hook.restart().await.unwrap();
        rig.fall_due(&failed, &notifier);
        let delivered = rig
            .wait_row(id, "delivered", |r| r.state == NotificationState::Delivered)
            .await;
        assert_eq!(delivered.attempts, 2);
        assert!(
            delivered
                .last_answer
                .as_deref()
                .unwrap_or_default()
                .starts_with("HTTP 200")
        );

        // More wakes and time change nothing: delivered once.
        rig.clock.advance(60_000);
        notifier.cast(NotifierMsg::Wake).unwrap();
        let got = hook.wait_for(1, WAIT).await.unwrap();
        notifier.call(NotifierMsg::Probe, None).await.unwrap();
        assert_eq!(hook.requests().len(), 1, "{got:?}");
        let request = &got[0];
        assert_eq!(request.signature_valid, Some(true));
        assert_eq!(
            request.header("x-reap3r-notification-id"),
            Some(id.to_string().as_str())
        );
        let body = request.json().unwrap();
        assert_eq!(body["id"], serde_json::json!(id));
        assert_eq!(body["alerts"][0]["hostname"], "web-1");
        notifier.stop(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_errors_back_off_then_dead_letter_under_one_idempotency_id() {
    for rig in rigs().await {
        let (hook, integration) = rig.signed_hook().await;
        hook.answer_with(500);
        let notifier = rig.notifier(policy(3)).await;
        let id = rig.enqueue(integration).await;

        let mut delays = Vec::new();
        for attempt in 1..3 {
            let row = rig
                .wait_row(id, "attempt failed", |r| {
                    r.attempts == attempt && r.state == NotificationState::Pending
                })
                .await;
            delays.push(row.next_attempt_at - rig.domain.now_ms());
            rig.fall_due(&row, &notifier);
        }
        // Base 1 s doubled, half of it jittered: [0.5, 1] s, then [1, 2] s.
        assert!((500..=1_000).contains(&delays[0]), "{delays:?}");
        assert!((1_000..=2_000).contains(&delays[1]), "{delays:?}");
        let dead = rig
            .wait_row(id, "dead letter", |r| r.state == NotificationState::Dead)
            .await;
        assert_eq!(dead.attempts, 3);
        let error = dead.last_error.clone().unwrap_or_default();
        assert!(error.starts_with("attempt 3: HTTP 500"), "{error}");

        let sent = hook.wait_for(3, WAIT).await.unwrap();
        let ids: Vec<_> = sent
            .iter()
            .map(|r| r.header("x-reap3r-notification-id").map(str::to_owned))
            .collect();
        assert_eq!(
            ids,
            vec![Some(id.to_string()); 3],
            "one idempotency id on every attempt"
        );
        assert!(sent.iter().all(|r| r.signature_valid == Some(true)));

        // An operator queues the dead letter again once the receiver is fixed.
        hook.answer_with(200);
        let again = RetryNotification { id }
            .run(&rig.domain, &rig.caller)
            .await
            .unwrap();
        assert_eq!(
            (again.state, again.attempts),
            (NotificationState::Pending, 0)
        );
        let delivered = rig
            .wait_row(id, "delivered after retry", |r| {
                r.state == NotificationState::Delivered
            })
            .await;
        assert_eq!(delivered.id, id);
        let sent = hook.wait_for(4, WAIT).await.unwrap();
        assert_eq!(
            sent[3].header("x-reap3r-notification-id"),
            Some(id.to_string().as_str())
        );
        let refused = RetryNotification { id }.run(&rig.domain, &rig.caller).await;
        assert!(
            matches!(refused, Err(DomainError::Conflict(_))),
            "{refused:?}"
        );
        notifier.stop(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_never_answers_does_not_hold_up_another_integration() {
    for rig in rigs().await {
        // Accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let hook = WebhookReceiver::start(Some(SECRET.as_bytes()))
            .await
            .unwrap();
        let slow = rig.webhook("slow", silent_url).await;
        let fast = rig.webhook("fast", hook.url("/hook")).await;
        let notifier = rig.notifier(policy(5)).await;
        let stuck: Vec<Uuid> = futures_ids(&rig, slow, 4).await;
        let id = rig.enqueue(fast).await;
        rig.wait_row(id, "the other integration is delivered", |r| {
            r.state == NotificationState::Delivered
        })
        .await;
        for s in stuck {
            assert_ne!(rig.row(s).await.state, NotificationState::Delivered);
        }
        held.abort();
        notifier.stop(None);
    }
}

async fn futures_ids(rig: &Rig, integration: Uuid, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(rig.enqueue(integration).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_test_email_arrives_with_plain_and_html_parts_and_the_smtp_answer() {
    for rig in rigs().await {
        let smtp = SmtpReceiver::start(SmtpOptions {
            credentials: Some(("alerts".into(), "pw".into())),
        })
        .await
        .unwrap();
        let email = CreateIntegration {
            name: "mail".into(),
            kind: IntegrationKind::Email,
            enabled: true,
            email: Some(EmailInput {
                host: Some(smtp.host()),
                port: Some(smtp.port()),
                security: Some(SmtpSecurity::Plain),
                username: Some("alerts".into()),
                from: Some("Reap3r <reap3r@example.com>".into()),
                to: Some(vec!["ops@example.com".into(), "oncall@example.com".into()]),
                ca_pem: None,
            }),
            url: None,
            secrets: SecretsInput {
                smtp_password: Some("pw".into()),
                ..SecretsInput::default()
            },
        }
        .run(&rig.domain, &rig.caller, &rig.channels)
        .await
        .unwrap();
        let outcome = TestIntegration {
            id: email.id,
            queue: false,
        }
        .run(&rig.domain, &rig.caller, &rig.channels)
        .await
        .unwrap();
        let TestOutcome::Sent { id, report } = outcome else {
            panic!("not sent: {outcome:?}");
        };
        assert!(report.delivered, "{report:?}");
        assert!(report.answer.starts_with("250"), "{report:?}");
        let mails = smtp.wait_for(1, WAIT).await.unwrap();
        let mail = &mails[0];
        assert_eq!(mail.user.as_deref(), Some("alerts"));
        assert_eq!(
            mail.to,
            vec![
                "ops@example.com".to_owned(),
                "oncall@example.com".to_owned()
            ]
        );
        assert!(
            mail.has_part("text/plain") && mail.has_part("text/html"),
            "{}",
            mail.data
        );
        assert_eq!(
            mail.header("X-Reap3r-Notification-Id"),
            Some(id.to_string())
        );
        assert!(
            mail.header("Subject")
                .unwrap_or_default()
                .contains("test message")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forbidden_and_malformed_receivers_are_refused_without_the_setting() {
    for rig in rigs().await {
        let strict = Channels::new(NotifySettings::default()).unwrap();
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "ftp://example.com/x",
            "not a url",
        ] {
            let refused = CreateIntegration {
                name: "x".into(),
                kind: IntegrationKind::Webhook,
                enabled: true,
                email: None,
                url: Some(url.into()),
                secrets: SecretsInput {
                    webhook_secret: Some(SECRET.into()),
                    ..SecretsInput::default()
                },
            }
            .run(&rig.domain, &rig.caller, &strict)
            .await;
            assert!(
                matches!(refused, Err(DomainError::Invalid { .. })),
                "{url}: {refused:?}"
            );
        }
        assert!(
            rig.domain
                .store
                .list_integrations(rig.caller.org_id)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attempt_cut_off_by_a_crash_is_sent_again_by_the_next_notifier() {
    for rig in rigs().await {
        let (hook, integration) = rig.signed_hook().await;
        let id = rig.enqueue(integration).await;
        // A notifier claimed the row and died before the attempt ended.
        let settings = policy(5);
        let now = rig.domain.now_ms();
        let mut tx = rig.domain.begin().await.unwrap();
        let claimed = tx
            .claim_notification(id, now, now + settings.lease_ms)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(claimed.attempt, 1);

        let notifier = rig.notifier(settings).await;
        notifier.call(NotifierMsg::Probe, None).await.unwrap();
        assert_eq!(
            rig.row(id).await.state,
            NotificationState::Sending,
            "claim still held"
        );
        assert!(hook.requests().is_empty());

        rig.clock.advance(u64::try_from(settings.lease_ms).unwrap());
        notifier.cast(NotifierMsg::Wake).unwrap();
        let delivered = rig
            .wait_row(id, "delivered after the claim expired", |r| {
                r.state == NotificationState::Delivered
            })
            .await;
        assert_eq!(delivered.attempts, 2);
        let got = hook.wait_for(1, WAIT).await.unwrap();
        assert_eq!(
            got[0].header("x-reap3r-notification-id"),
            Some(id.to_string().as_str())
        );
        notifier.stop(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_receiver_s_retry_after_is_honoured() {
    for rig in rigs().await {
        let (hook, integration) = rig.signed_hook().await;
        hook.answer_with(429);
        hook.retry_after(90);
        let mut settings = policy(3);
        settings.retry.max_backoff_ms = 600_000;
        let notifier = rig.notifier(settings).await;
        let id = rig.enqueue(integration).await;
        let row = rig
            .wait_row(id, "attempt rate-limited", |r| {
                r.attempts == 1 && r.state == NotificationState::Pending
            })
            .await;
        // The backoff alone would be [0.5, 1] s; the receiver asked for 90 s (the cap, 600 s,
        // is tested with the retry policy).
        let delay = row.next_attempt_at - rig.domain.now_ms();
        assert_eq!(delay, 90_000, "retry {delay} ms after the 429");
        let error = row.last_error.clone().unwrap_or_default();
        assert!(error.starts_with("attempt 1: HTTP 429"), "{error}");
        notifier.stop(None);
    }
}
