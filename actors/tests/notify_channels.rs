//! Channels with a DNS table in place of the system resolver (the `Lookup` seam), against real
//! local receivers: a receiver's name is resolved once per send, every address is checked, and
//! the connection goes to exactly the addresses checked, so a name that resolves (or rebinds)
//! to loopback is refused at send time without a byte sent, and an SMTP server reached by a
//! checked address still has its certificate verified for its name.

#![expect(
    clippy::unwrap_used,
    reason = "the DNS table's helpers live outside #[test] functions"
)]

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use reap3r_actors::notify::channels::ChannelSecrets;
use reap3r_actors::notify::ssrf::Lookup;
use reap3r_actors::notify::{
    Channel, ChannelConfig, Channels, EmailConfig, IntegrationKind, NotificationKind,
    NotificationMessage, NotifySettings, SmtpSecurity,
};
use reap3r_store::Uuid;
use reap3r_testkit::{SmtpOptions, SmtpReceiver, SmtpTlsMode, TestCa, WebhookReceiver};

/// Plays DNS: each name's answer, and how many lookups were made.
#[derive(Debug, Default)]
struct Table {
    answers: Mutex<HashMap<String, Vec<IpAddr>>>,
    lookups: AtomicUsize,
}

impl Table {
    fn with(name: &str, ip: &str) -> Arc<Table> {
        let table = Table::default();
        table
            .answers
            .lock()
            .unwrap()
            .insert(name.into(), vec![ip.parse().unwrap()]);
        Arc::new(table)
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

type Answer<'a> = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;

impl Lookup for Table {
    fn lookup<'a>(&'a self, name: &'a str, port: u16) -> Answer<'a> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self.answers.lock().unwrap().get(name).cloned();
        Box::pin(async move {
            let ips = found.ok_or_else(|| std::io::Error::other(format!("no such name {name}")))?;
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect())
        })
    }
}

fn channels(allow_loopback: bool, table: &Arc<Table>) -> Channels {
    Channels::with_lookup(NotifySettings { allow_loopback }, table.clone()).unwrap()
}

fn channel(kind: IntegrationKind, config: ChannelConfig, secrets: ChannelSecrets) -> Channel {
    Channel {
        id: Uuid::now_v7(),
        org_id: Uuid::now_v7(),
        name: "under test".into(),
        kind,
        config,
        secrets,
        enabled: true,
        created_at: 0,
        updated_at: None,
    }
}

fn message() -> NotificationMessage {
    NotificationMessage {
        kind: NotificationKind::Test,
        org_id: Uuid::now_v7(),
        group_key: "test".into(),
        title: "[info] test".into(),
        severity: "info".into(),
        total: 0,
        alerts: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_name_resolving_to_loopback_is_refused_and_allowed_ones_go_to_its_address() {
    let hook = WebhookReceiver::start(None).await.unwrap();
    let dns = Table::with("hooks.example.test", "127.0.0.1");
    let url = format!("http://hooks.example.test:{}/hook", hook.port());
    let chat = channel(
        IntegrationKind::Slack,
        ChannelConfig::default(),
        ChannelSecrets {
            hook_url: Some(url),
            ..ChannelSecrets::default()
        },
    );

    let refused = channels(false, &dns)
        .send(&chat, &message(), Uuid::now_v7(), 0)
        .await;
    assert!(!refused.delivered, "{refused:?}");
    assert!(
        refused.answer.contains("resolves to 127.0.0.1"),
        "{refused:?}"
    );
    assert_eq!(dns.lookups(), 1);
    assert!(hook.requests().is_empty(), "{:?}", hook.requests());

    // The name exists only in the table: reaching the receiver means the connection went to
    // the address the table gave, while the request still names the host.
    let sent = channels(true, &dns)
        .send(&chat, &message(), Uuid::now_v7(), 0)
        .await;
    assert!(sent.delivered, "{sent:?}");
    let got = hook
        .wait_for(1, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        got[0].header("host"),
        Some(format!("hooks.example.test:{}", hook.port()).as_str())
    );
    assert_eq!(dns.lookups(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_goes_to_the_checked_address_once_and_verifies_the_certificate_for_the_name() {
    let ca = TestCa::new("channels test CA").unwrap();
    let cert = ca.issue(&["mail.example.test"]).unwrap();
    let smtp = SmtpReceiver::start_tls(SmtpOptions::default(), SmtpTlsMode::Starttls, &cert)
        .await
        .unwrap();
    let dns = Table::with("mail.example.test", "127.0.0.1");
    let mail = channel(
        IntegrationKind::Email,
        ChannelConfig {
            email: Some(EmailConfig {
                host: "mail.example.test".into(),
                port: smtp.port(),
                security: SmtpSecurity::Starttls,
                username: None,
                from: "reap3r@example.com".into(),
                to: vec!["ops@example.com".into()],
                ca_pem: Some(ca.pem()),
            }),
            url: None,
        },
        ChannelSecrets::default(),
    );

    let refused = channels(false, &dns)
        .send(&mail, &message(), Uuid::now_v7(), 0)
        .await;
    assert!(
        !refused.delivered && refused.answer.contains("resolves to 127.0.0.1"),
        "{refused:?}"
    );
    assert_eq!(dns.lookups(), 1);

    let sent = channels(true, &dns)
        .send(&mail, &message(), Uuid::now_v7(), 0)
        .await;
    assert!(sent.delivered, "{sent:?}");
    // One lookup for the send: lettre was given the checked address, not the name.
    assert_eq!(dns.lookups(), 2);
    let mails = smtp
        .wait_for(1, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert!(mails[0].tls, "{:?}", mails[0]);
}
