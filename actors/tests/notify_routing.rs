//! The routing driver with a real store (SQLite and PostgreSQL) and a manual clock: alert
//! changes handed to its sink are grouped into one message, what it decided survives a restart
//! (no due message lost, none sent twice), policy or silence changes made through the
//! operations reach it, a snooze made through its operation holds reminders and escalation
//! across a restart, and changes a crash lost between alerting's commit and routing's are
//! routed from the alert_events rows when the driver starts again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use reap3r_actors::access::Caller;
use reap3r_actors::alerts::{
    AckAlert, AgentFacts, AlertChange, AlertChangeKind, AlertSink, NoAlertSink, Severity,
    SnoozeAlert, change_of,
};
use reap3r_actors::notify::routing::{
    CreateRouting, DEFAULT_GROUP_INTERVAL_S, DEFAULT_GROUP_WAIT_S, DEFAULT_REPEAT_INTERVAL_S,
    EscalationStep, Matcher, PolicySpec, RoutingDriver, RoutingMsg, RoutingSink, SilenceSpec,
};
use reap3r_actors::notify::{
    Channels, CreateIntegration, DeleteIntegration, IntegrationKind, NotifySettings, SecretsInput,
};
use reap3r_actors::{Domain, EventBus, ManualClock};
use reap3r_store::{AlertEvent, NewAlertEvent, RoutingSent, Store, Uuid};
use reap3r_testkit::TestDatabase;

const T0: u64 = 1_700_000_000_000;

struct Rig {
    _db: TestDatabase,
    store: Store,
    clock: ManualClock,
    domain: Domain,
    org: Uuid,
    mail: Uuid,
}

async fn rigs() -> Vec<Rig> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        let clock = ManualClock::new(T0);
        let domain = Domain::new(
            store.clone(),
            Arc::new(clock.clone()),
            EventBus::new(256),
            reap3r_actors::vault::Keyring::ephemeral(),
        );
        let org = store.default_org(T0 as i64).await.unwrap().id;
        // The outbox refuses integrations that do not exist: the policy names a real one (it
        // is never delivered to: no notifier runs here).
        let mail = webhook(&domain, org, "mail").await;
        out.push(Rig {
            _db: db,
            store,
            clock,
            domain,
            org,
            mail,
        });
    }
    out
}

/// A real webhook integration (never delivered to: no notifier runs in these tests).
async fn webhook(domain: &Domain, org: Uuid, name: &str) -> Uuid {
    let channels = Channels::new(NotifySettings {
        allow_loopback: true,
    })
    .unwrap();
    CreateIntegration {
        name: name.into(),
        kind: IntegrationKind::Webhook,
        enabled: true,
        email: None,
        url: Some("http://127.0.0.1:9/hook".into()),
        secrets: SecretsInput {
            webhook_secret: Some("routing-test-secret-0123".into()),
            ..SecretsInput::default()
        },
    }
    .run(domain, &Caller::cli(org), &channels)
    .await
    .unwrap()
    .id
}

impl Rig {
    async fn policy(&self) {
        self.policy_to(vec![self.mail]).await;
    }

    async fn policy_to(&self, integrations: Vec<Uuid>) {
        self.policy_with(integrations, vec![]).await;
    }

    async fn policy_with(&self, integrations: Vec<Uuid>, escalation: Vec<EscalationStep>) {
        CreateRouting {
            spec: PolicySpec {
                name: "on call".into(),
                enabled: true,
                severities: vec![],
                tags: vec![],
                folder_ids: vec![],
                integrations,
                group_by: vec![],
                group_wait_s: DEFAULT_GROUP_WAIT_S,
                group_interval_s: DEFAULT_GROUP_INTERVAL_S,
                repeat_interval_s: DEFAULT_REPEAT_INTERVAL_S,
                escalation,
            },
        }
        .run(&self.domain, &Caller::cli(self.org))
        .await
        .unwrap();
    }

    fn change(&self, rule: Uuid, host: &str, kind: AlertChangeKind) -> AlertChange {
        let now = self.domain.now_ms();
        AlertChange {
            event_id: name_id(&format!("{rule}/{host}")),
            rule_id: rule,
            rule_name: "High CPU".into(),
            org_id: self.org,
            agent_id: Some(name_id(host)),
            hostname: Some(host.into()),
            agent_tags: vec![],
            folder_id: None,
            severity: Severity::Critical,
            kind,
            fired_at_ms: now,
            at_ms: now,
            summary: format!("cpu on {host}"),
            value: Some(97.0),
            snoozed_until_ms: None,
        }
    }

    /// An event alerting committed as firing (open, then fire), as a rule actor does.
    async fn fire_event(&self, rule: Uuid, host: &str) -> AlertEvent {
        let now = self.domain.now_ms();
        let mut tx = self.domain.begin().await.unwrap();
        let open = tx
            .open_alert_event(
                &NewAlertEvent {
                    org_id: self.org,
                    rule_id: rule,
                    rule_name: "High CPU".into(),
                    agent_id: Some(name_id(host)),
                    severity: "critical".into(),
                    summary: format!("cpu on {host}"),
                    value: Some(97.0),
                    pending_at: now,
                },
                now,
            )
            .await
            .unwrap();
        let fired = tx
            .fire_alert_event(open.id, &open.summary, open.value, now)
            .await
            .unwrap()
            .unwrap();
        self.domain.commit(tx).await.unwrap();
        fired
    }

    /// Alerting resolves the event (the condition cleared).
    async fn resolve_event(&self, event: &AlertEvent) -> AlertEvent {
        let now = self.domain.now_ms();
        let mut tx = self.domain.begin().await.unwrap();
        let resolved = tx
            .resolve_alert_event(None, event.id, "system", None, now)
            .await
            .unwrap()
            .unwrap();
        self.domain.commit(tx).await.unwrap();
        resolved
    }

    /// What alerting hands to routing after committing `event`.
    fn handed(&self, event: &AlertEvent, kind: AlertChangeKind) -> AlertChange {
        change_of(event, kind, AgentFacts::default(), self.domain.now_ms())
    }

    fn cli(&self) -> Caller {
        Caller::cli(self.org)
    }

    async fn sent(&self) -> Vec<RoutingSent> {
        self.store.routing_sent(self.org).await.unwrap()
    }

    /// Polls until `done` holds for what was sent (with a deadline), and returns it.
    async fn sent_until(
        &self,
        what: &str,
        done: impl Fn(&[RoutingSent]) -> bool,
    ) -> Vec<RoutingSent> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sent = self.sent().await;
            if done(&sent) {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {sent:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the clock and ticks, then waits until the (only) group is written at the new time,
    /// so the next move of the clock cannot overtake this tick.
    async fn tick_seen(&self, sink: &RoutingSink, by: Duration) {
        tick(sink, &self.clock, by);
        let now = self.domain.now_ms();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.store.routing_groups().await.unwrap()[0].updated_at < now {
            assert!(Instant::now() < deadline, "the tick was not handled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the persisted groups hold `alerts` alerts in total.
    async fn groups_hold(&self, alerts: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = self.store.routing_groups().await.unwrap();
            let held: usize = rows
                .iter()
                .map(|r| {
                    let v: serde_json::Value = serde_json::from_str(&r.state).unwrap();
                    v["alerts"].as_object().map_or(0, |a| a.len())
                })
                .sum();
            if held == alerts {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "groups hold {held}, want {alerts}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stable id for a name.
fn name_id(name: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&blake3::hash(name.as_bytes()).as_bytes()[..16]);
    Uuid::from_bytes(bytes)
}

fn tick(sink: &RoutingSink, clock: &ManualClock, by: Duration) {
    clock.advance(by.as_millis() as u64);
    assert!(sink.driver().cast(RoutingMsg::Tick));
}

#[tokio::test]
async fn a_burst_of_changes_is_one_message_and_a_restart_neither_loses_nor_repeats() {
    for rig in rigs().await {
        rig.policy().await;
        let rule = Uuid::new_v4();
        let sink = RoutingSink::default();
        let driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        for n in 0..500 {
            sink.alert_changed(rig.change(rule, &format!("h{n}"), AlertChangeKind::Fired));
        }
        rig.groups_hold(500).await;
        assert!(rig.sent().await.is_empty(), "nothing before group_wait");

        // The node goes down before group_wait; the new driver sends the due message once.
        driver.stop_and_wait(None, None).await.unwrap();
        rig.clock.advance(31_000);
        let driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        let sent = rig.sent_until("the first message", |s| !s.is_empty()).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!((sent[0].kind.as_str(), sent[0].total), ("firing", 500));
        assert_eq!(sent[0].integration_id, rig.mail);

        // A restart after the send does not send it again; the next change is the next message.
        driver.stop_and_wait(None, None).await.unwrap();
        let _driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        sink.alert_changed(rig.change(rule, "late", AlertChangeKind::Fired));
        rig.groups_hold(501).await;
        tick(&sink, &rig.clock, Duration::from_secs(5 * 60));
        let sent = rig.sent_until("the second message", |s| s.len() >= 2).await;
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!((sent[1].kind.as_str(), sent[1].total), ("firing", 501));
    }
}

#[tokio::test]
async fn resolutions_are_sent_and_the_group_row_goes() {
    for rig in rigs().await {
        rig.policy().await;
        let rule = Uuid::new_v4();
        let sink = RoutingSink::default();
        let _driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        sink.alert_changed(rig.change(rule, "a", AlertChangeKind::Fired));
        rig.groups_hold(1).await;
        tick(&sink, &rig.clock, Duration::from_secs(30));
        rig.sent_until("firing", |s| s.len() == 1).await;
        sink.alert_changed(rig.change(rule, "a", AlertChangeKind::Resolved));
        tick(&sink, &rig.clock, Duration::from_secs(5 * 60));
        let sent = rig.sent_until("resolved", |s| s.len() == 2).await;
        assert_eq!(sent[1].kind, "resolved");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !rig.store.routing_groups().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the empty group was not deleted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_silence_created_through_the_operation_reaches_the_driver() {
    for rig in rigs().await {
        rig.policy().await;
        let rule = Uuid::new_v4();
        let muted = Uuid::new_v4();
        let sink = RoutingSink::default();
        let _driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        let now = rig.domain.now_ms();
        CreateRouting {
            spec: SilenceSpec {
                matchers: vec![Matcher::Rule(muted)],
                starts_at_ms: now,
                ends_at_ms: now + 3_600_000,
                comment: "planned reboot".into(),
            },
        }
        .run(&rig.domain, &Caller::cli(rig.org))
        .await
        .unwrap();
        // Silences are matched when a group flushes, so the reload (cast as soon as the
        // silence's audit record is published) only has to land before the tick below.
        sink.alert_changed(rig.change(muted, "a", AlertChangeKind::Fired));
        sink.alert_changed(rig.change(rule, "b", AlertChangeKind::Fired));
        rig.groups_hold(2).await;
        tick(&sink, &rig.clock, Duration::from_secs(30));
        let sent = rig
            .sent_until("the unsilenced group", |s| !s.is_empty())
            .await;
        tick(&sink, &rig.clock, Duration::from_secs(10 * 60));
        rig.groups_hold(2).await;
        let sent_later = rig.sent().await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(
            sent_later
                .iter()
                .all(|s| s.group_key.contains(&rule.to_string()))
        );
    }
}

#[tokio::test]
async fn an_integration_deleted_after_its_policy_is_skipped_and_the_others_still_hear() {
    for rig in rigs().await {
        let gone = webhook(&rig.domain, rig.org, "gone").await;
        rig.policy_to(vec![gone, rig.mail]).await;
        DeleteIntegration { id: gone }
            .run(&rig.domain, &Caller::cli(rig.org))
            .await
            .unwrap();
        let sink = RoutingSink::default();
        let _driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        let rule = Uuid::new_v4();
        sink.alert_changed(rig.change(rule, "h1", AlertChangeKind::Fired));
        rig.groups_hold(1).await;
        tick(&sink, &rig.clock, Duration::from_secs(31));
        let sent = rig.sent_until("the message", |s| !s.is_empty()).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].integration_id, rig.mail);
        // The batch committed (it was not retried forever): a later change is sent too.
        sink.alert_changed(rig.change(rule, "h2", AlertChangeKind::Fired));
        rig.groups_hold(2).await;
        tick(&sink, &rig.clock, Duration::from_secs(5 * 60));
        let sent = rig.sent_until("the second message", |s| s.len() >= 2).await;
        assert!(
            sent.iter().all(|s| s.integration_id == rig.mail),
            "{sent:?}"
        );
    }
}

fn kinds(sent: &[RoutingSent]) -> Vec<(&str, i64)> {
    sent.iter().map(|s| (s.kind.as_str(), s.total)).collect()
}

/// What [`escalating`] set up.
struct Escalating {
    pager: Uuid,
    sink: RoutingSink,
    driver: ractor::ActorRef<RoutingMsg>,
    event: AlertEvent,
}

/// A mail policy escalating to a pager after 10 minutes, a running driver, and an event on
/// `host` fired and notified (its first message sent).
async fn escalating(rig: &Rig, host: &str) -> Escalating {
    let pager = webhook(&rig.domain, rig.org, "pager").await;
    let step = EscalationStep {
        after_minutes: 10,
        integrations: vec![pager],
    };
    rig.policy_with(vec![rig.mail], vec![step]).await;
    let sink = RoutingSink::default();
    let driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
        .await
        .unwrap();
    let event = rig.fire_event(Uuid::new_v4(), host).await;
    sink.alert_changed(rig.handed(&event, AlertChangeKind::Fired));
    rig.groups_hold(1).await;
    tick(&sink, &rig.clock, Duration::from_secs(30));
    rig.sent_until("firing", |s| s.len() == 1).await;
    Escalating {
        pager,
        sink,
        driver,
        event,
    }
}

#[tokio::test]
async fn a_snooze_holds_reminders_and_escalation_across_a_restart_and_its_end_is_told_once() {
    for rig in rigs().await {
        let Escalating {
            pager,
            sink,
            driver,
            event,
        } = escalating(&rig, "db-1").await;

        // Snoozed for 2 h through the operation; the snooze survives a restart.
        SnoozeAlert {
            id: event.id,
            for_s: 7200,
        }
        .run(&rig.domain, &rig.cli(), &sink)
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !rig.store.routing_groups().await.unwrap()[0]
            .state
            .contains("\"snoozed_until_ms\":1")
        {
            assert!(
                Instant::now() < deadline,
                "the snooze did not reach routing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        driver.stop_and_wait(None, None).await.unwrap();
        let _driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        // Past the escalation step's 10 minutes, and on to just before the snooze ends; each
        // tick is seen (the group is written) before the clock moves on.
        rig.tick_seen(&sink, Duration::from_secs(11 * 60)).await;
        rig.tick_seen(&sink, Duration::from_secs(7200 - 11 * 60 - 1))
            .await;
        // The snooze ends: told once; the escalation's delay starts over from then.
        rig.tick_seen(&sink, Duration::from_secs(2)).await;
        let sent = rig.sent_until("the snooze's end", |s| s.len() >= 2).await;
        assert_eq!(kinds(&sent), [("firing", 1), ("reminder", 1)], "{sent:?}");
        assert!(sent[1].title.contains("after snooze"), "{sent:?}");
        tick(&sink, &rig.clock, Duration::from_secs(10 * 60));
        let sent = rig.sent_until("the escalation", |s| s.len() >= 3).await;
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert_eq!(
            (sent[2].kind.as_str(), sent[2].integration_id),
            ("escalation", pager)
        );
    }
}

#[tokio::test]
async fn changes_lost_in_a_crash_are_routed_once_from_the_event_rows_after_the_restart() {
    for rig in rigs().await {
        rig.policy().await;
        let rule = Uuid::new_v4();
        let sink = RoutingSink::default();
        let driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        let a = rig.fire_event(rule, "a").await;
        let b = rig.fire_event(rule, "b").await;
        for e in [&a, &b] {
            sink.alert_changed(rig.handed(e, AlertChangeKind::Fired));
        }
        rig.groups_hold(2).await;
        tick(&sink, &rig.clock, Duration::from_secs(30));
        rig.sent_until("firing", |s| s.len() == 1).await;

        // Routing dies; meanwhile alerting commits a resolve of a and a new firing c, and
        // neither change reaches routing.
        driver.stop_and_wait(None, None).await.unwrap();
        rig.resolve_event(&a).await;
        rig.fire_event(rule, "c").await;
        let driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        rig.groups_hold(3).await;
        tick(&sink, &rig.clock, Duration::from_secs(5 * 60));
        let sent = rig.sent_until("the missed changes", |s| s.len() >= 3).await;
        let mut later = kinds(&sent[1..]);
        later.sort();
        // c is new (sent with b, which is still firing); a's resolution is told.
        assert_eq!(later, [("firing", 2), ("resolved", 1)], "{sent:?}");

        // Another restart finds nothing missed: nothing is sent again.
        driver.stop_and_wait(None, None).await.unwrap();
        let _driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        rig.groups_hold(2).await;
        assert_eq!(rig.sent().await.len(), 3);
    }
}

#[tokio::test]
async fn an_ack_lost_in_a_crash_still_stops_escalation() {
    for rig in rigs().await {
        let Escalating {
            pager: _,
            sink,
            driver,
            event,
        } = escalating(&rig, "a").await;

        driver.stop_and_wait(None, None).await.unwrap();
        AckAlert { id: event.id }
            .run(&rig.domain, &rig.cli(), &NoAlertSink)
            .await
            .unwrap();
        let _driver = RoutingDriver::start(rig.domain.clone(), sink.clone())
            .await
            .unwrap();
        tick(&sink, &rig.clock, Duration::from_secs(11 * 60));
        // The resolution's message shows the tick above was handled: no escalation before it.
        let resolved = rig.resolve_event(&event).await;
        sink.alert_changed(rig.handed(&resolved, AlertChangeKind::Resolved));
        tick(&sink, &rig.clock, Duration::from_secs(5 * 60));
        let sent = rig.sent_until("resolved", |s| s.len() >= 2).await;
        assert_eq!(kinds(&sent), [("firing", 1), ("resolved", 1)], "{sent:?}");
    }
}
