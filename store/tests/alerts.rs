//! Alerting rows on every backend available here (SQLite always, PostgreSQL when
//! `REAP3R_TEST_POSTGRES_URL` is set): rules per organisation, the state a rule actor resumes
//! from, guarded event transitions with their history, pages and stats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reap3r_store::{
    AlertEventFilter, AlertRuleState, AlertRuleUpdate, NewAlertEvent, NewAlertRule, Store,
    StoreError, Uuid,
};
use reap3r_testkit::TestDatabase;
use serde_json::json;

const T0: i64 = 1_700_000_000_000;

async fn stores() -> Vec<(TestDatabase, Store)> {
    let mut out = Vec::new();
    for db in TestDatabase::all().await.unwrap() {
        let store = db.open().await.unwrap();
        out.push((db, store));
    }
    out
}

fn new_rule(name: &str) -> NewAlertRule {
    NewAlertRule {
        name: name.into(),
        enabled: true,
        severity: "critical".into(),
        kind: "agent_offline".into(),
        spec: json!({ "kind": "agent_offline", "for_s": 60 }),
        scope: json!({ "tags": [], "folders": [], "agents": [] }),
        created_by: "cli".into(),
    }
}

fn new_event(org_id: Uuid, rule_id: Uuid, agent: Uuid, at: i64) -> NewAlertEvent {
    NewAlertEvent {
        org_id,
        rule_id,
        rule_name: "offline".into(),
        agent_id: Some(agent),
        severity: "critical".into(),
        summary: "agent offline".into(),
        value: Some(1.5),
        pending_at: at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_per_org_and_their_state_resumes() {
    for (_db, store) in stores().await {
        let org = store.default_org(0).await.unwrap().id;
        let mut tx = store.begin().await.unwrap();
        let rule = tx
            .create_alert_rule(org, &new_rule("offline"), T0)
            .await
            .unwrap();
        let dup = tx.create_alert_rule(org, &new_rule("offline"), T0).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        tx.rollback().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let rule2 = tx
            .create_alert_rule(org, &new_rule("offline"), T0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_ne!(rule.id, rule2.id, "the rolled-back rule is gone");
        assert_eq!(
            store.list_alert_rules(org).await.unwrap(),
            vec![rule2.clone()]
        );
        assert!(
            store
                .alert_rule(Uuid::new_v4(), rule2.id)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.enabled_alert_rules().await.unwrap().len(), 1);

        // A pending and a firing state, as a rule actor writes them.
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut tx = store.begin().await.unwrap();
        let event = tx
            .open_alert_event(&new_event(org, rule2.id, a, T0), T0)
            .await
            .unwrap();
        for (agent, phase, fired) in [(a, "pending", None), (b, "firing", Some(T0 + 5))] {
            let state = AlertRuleState {
                agent_id: agent,
                phase: phase.into(),
                since: T0,
                fired_at: fired,
                last_value: Some(97.5),
                event_id: event.id,
            };
            tx.put_alert_rule_state(rule2.id, agent, Some(&state), T0)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let states = store.alert_rule_states(rule2.id).await.unwrap();
        assert_eq!(states.len(), 2);
        assert!(states.iter().all(|s| s.last_value == Some(97.5)));

        // A new condition starts the rule over: states dropped, open events resolved.
        let mut tx = store.begin().await.unwrap();
        let updated = tx
            .update_alert_rule(
                org,
                rule2.id,
                &AlertRuleUpdate {
                    name: Some("down".into()),
                    kind: Some((
                        "agent_offline".into(),
                        json!({ "kind": "agent_offline", "for_s": 90 }),
                    )),
                    ..Default::default()
                },
                T0 + 10,
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(updated.name, "down");
        assert_eq!(updated.spec["for_s"], 90);
        assert!(store.alert_rule_states(rule2.id).await.unwrap().is_empty());
        let e = store.alert_event(org, event.id).await.unwrap().unwrap();
        assert_eq!(
            (e.state.as_str(), e.resolved_at),
            ("resolved", Some(T0 + 10))
        );

        let mut tx = store.begin().await.unwrap();
        let other = tx
            .update_alert_rule(Uuid::new_v4(), rule2.id, &AlertRuleUpdate::default(), T0)
            .await;
        assert!(matches!(other, Err(StoreError::NotFound)));
        tx.delete_alert_rule(org, rule2.id, T0 + 20).await.unwrap();
        tx.commit().await.unwrap();
        assert!(store.list_alert_rules(org).await.unwrap().is_empty());
        // Events outlive their rule.
        assert!(store.alert_event(org, event.id).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_transitions_are_guarded_and_recorded() {
    for (_db, store) in stores().await {
        let org = store.default_org(0).await.unwrap().id;
        let mut tx = store.begin().await.unwrap();
        let rule = tx.create_alert_rule(org, &new_rule("r"), T0).await.unwrap();
        let agents: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut ids = Vec::new();
        for (i, agent) in agents.iter().enumerate() {
            let e = tx
                .open_alert_event(&new_event(org, rule.id, *agent, T0 + i as i64), T0)
                .await
                .unwrap();
            ids.push(e.id);
        }
        let fired = tx
            .fire_alert_event(ids[0], "fired", Some(2.0), T0 + 10)
            .await
            .unwrap();
        assert_eq!(fired.unwrap().fired_at, Some(T0 + 10));
        assert!(
            tx.fire_alert_event(ids[0], "again", None, T0 + 11)
                .await
                .unwrap()
                .is_none()
        );
        tx.fire_alert_event(ids[1], "fired", None, T0 + 10)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.begin().await.unwrap();
        let other = Uuid::new_v4();
        assert!(matches!(
            tx.ack_alert_event(other, ids[0], "user:a", T0).await,
            Err(StoreError::NotFound)
        ));
        let acked = tx
            .ack_alert_event(org, ids[0], "user:a", T0 + 20)
            .await
            .unwrap();
        assert_eq!(acked.acked_by.as_deref(), Some("user:a"));
        assert!(matches!(
            tx.ack_alert_event(org, ids[0], "user:b", T0 + 21).await,
            Err(StoreError::Conflict(_))
        ));
        tx.snooze_alert_event(org, ids[0], T0 + 999, "user:a", T0 + 22)
            .await
            .unwrap();
        tx.add_alert_note(org, ids[0], "user:a", "on it", T0 + 23)
            .await
            .unwrap();
        assert!(matches!(
            tx.add_alert_note(other, ids[0], "user:x", "no", T0).await,
            Err(StoreError::NotFound)
        ));
        let resolved = tx
            .resolve_alert_event(Some(org), ids[0], "user:a", Some("done"), T0 + 30)
            .await
            .unwrap();
        assert_eq!(resolved.unwrap().resolved_by.as_deref(), Some("user:a"));
        // A second resolve (the rule actor racing the operator) finds nothing to change.
        assert!(
            tx.resolve_alert_event(None, ids[0], "system", None, T0 + 31)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            tx.ack_alert_event(org, ids[0], "user:a", T0 + 32).await,
            Err(StoreError::Conflict(_))
        ));
        tx.commit().await.unwrap();

        let history: Vec<(String, String)> = store
            .alert_event_history(ids[0])
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.action, h.actor))
            .collect();
        let want = [
            ("pending", "system"),
            ("fired", "system"),
            ("acked", "user:a"),
            ("snoozed", "user:a"),
            ("note", "user:a"),
            ("resolved", "user:a"),
        ];
        assert_eq!(
            history,
            want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
        );
        assert_eq!(
            store.alert_event_notes(ids[0]).await.unwrap()[0].body,
            "on it"
        );

        // Pages, newest first, with a cursor; filters; other orgs see nothing.
        let page = |before, state: Option<&str>| AlertEventFilter {
            state: state.map(str::to_owned),
            before,
            limit: 2,
            ..Default::default()
        };
        let first = store
            .list_alert_events(org, &page(None, None))
            .await
            .unwrap();
        assert_eq!(
            first.iter().map(|e| e.id).collect::<Vec<_>>(),
            [ids[2], ids[1]]
        );
        let last = first.last().unwrap();
        let second = store
            .list_alert_events(org, &page(Some((last.pending_at, last.id)), None))
            .await
            .unwrap();
        assert_eq!(second.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[0]]);
        let firing = store
            .list_alert_events(org, &page(None, Some("firing")))
            .await
            .unwrap();
        assert_eq!(firing.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1]]);
        assert!(
            store
                .list_alert_events(other, &page(None, None))
                .await
                .unwrap()
                .is_empty()
        );

        let stats = store.alert_stats(org, 5).await.unwrap();
        assert_eq!(
            (stats.open, stats.acked, stats.critical, stats.pending),
            (1, 0, 1, 1)
        );
        assert_eq!(stats.top_agents, vec![(agents[1], 1)]);
    }
}
