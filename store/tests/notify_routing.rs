//! Repository tests for notification routing (schema 0006): policies, silences and maintenance
//! windows scoped to their org, the persisted alert groups, and the log of what routing
//! enqueued. Every test runs against every backend available here (SQLite always, PostgreSQL
//! when `REAP3R_TEST_POSTGRES_URL` is set).

use anyhow::Result;
use reap3r_store::{
    RoutingGroupRow, RoutingKind, RoutingSent, RoutingWrite, Store, StoreError, Tx, Uuid,
};

mod support;
use support::{T0, create_org, stores};

async fn commit<T>(tx: Tx, value: Result<T, StoreError>) -> Result<T, StoreError> {
    let value = value?;
    tx.commit().await?;
    Ok(value)
}

fn named(name: &str, spec: &str) -> RoutingWrite {
    RoutingWrite {
        spec: spec.into(),
        name: Some(name.into()),
        span: None,
    }
}

fn span(spec: &str, starts: i64, ends: i64) -> RoutingWrite {
    RoutingWrite {
        spec: spec.into(),
        name: None,
        span: Some((starts, ends)),
    }
}

async fn create(
    store: &Store,
    kind: RoutingKind,
    org: Uuid,
    write: &RoutingWrite,
) -> Result<reap3r_store::RoutingRecord, StoreError> {
    let mut tx = store.begin().await?;
    let value = tx
        .create_routing(kind, org, write, "ops@example.com", T0)
        .await;
    commit(tx, value).await
}

#[tokio::test]
async fn routing_specs_are_created_listed_replaced_and_deleted_per_org() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?.id;
        let other = create_org(&store, "other", T0).await?.id;
        for kind in [RoutingKind::Policy, RoutingKind::Maintenance] {
            let a = create(&store, kind, acme, &named("night", r#"{"v":1}"#)).await?;
            assert_eq!((a.org_id, a.spec.as_str()), (acme, r#"{"v":1}"#), "{b}");
            assert_eq!(a.created_by, "ops@example.com");
            // Names are unique per org, not across orgs.
            let dup = create(&store, kind, acme, &named("night", "{}")).await;
            assert!(matches!(dup, Err(StoreError::Conflict(_))), "{b}: {dup:?}");
            create(&store, kind, other, &named("night", "{}")).await?;
            assert_eq!(
                store.list_routing(kind, acme).await?,
                vec![a.clone()],
                "{b}"
            );
            assert_eq!(store.routing(kind, other, a.id).await?, None, "{b}");

            let mut tx = store.begin().await?;
            let changed = tx
                .update_routing(kind, acme, a.id, &named("day", r#"{"v":2}"#), T0 + 5)
                .await;
            let changed = commit(tx, changed).await?;
            assert_eq!(
                (changed.spec.as_str(), changed.updated_at),
                (r#"{"v":2}"#, T0 + 5)
            );
            assert_eq!(changed.created_at, T0);

            let mut tx = store.begin().await?;
            let foreign = tx
                .update_routing(kind, other, a.id, &named("x", "{}"), T0)
                .await;
            assert!(matches!(foreign, Err(StoreError::NotFound)), "{b}");
            drop(tx);
            let mut tx = store.begin().await?;
            let foreign = tx.delete_routing(kind, other, a.id).await;
            assert!(matches!(foreign, Err(StoreError::NotFound)), "{b}");
            drop(tx);
            let mut tx = store.begin().await?;
            let gone = tx.delete_routing(kind, acme, a.id).await;
            commit(tx, gone).await?;
            assert_eq!(store.routing(kind, acme, a.id).await?, None, "{b}");
            assert_eq!(store.all_routing(kind, T0).await?.len(), 1, "{b}");
        }
        // A named kind needs its name, a silence its span.
        let mut tx = store.begin().await?;
        let bad = tx
            .create_routing(RoutingKind::Policy, acme, &span("{}", 0, 1), "x", T0)
            .await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))), "{b}");
    }
    Ok(())
}

#[tokio::test]
async fn only_silences_that_have_not_ended_are_loaded() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?.id;
        let past = create(&store, RoutingKind::Silence, acme, &span("{}", T0 - 10, T0)).await?;
        let live = create(&store, RoutingKind::Silence, acme, &span("{}", T0, T0 + 10)).await?;
        let later = create(
            &store,
            RoutingKind::Silence,
            acme,
            &span("{}", T0 + 5, T0 + 9),
        )
        .await?;
        let ids: Vec<Uuid> = store
            .all_routing(RoutingKind::Silence, T0)
            .await?
            .iter()
            .map(|r| r.id)
            .collect();
        assert!(ids.contains(&live.id) && ids.contains(&later.id), "{b}");
        assert!(!ids.contains(&past.id), "{b}");
        // The org's listing still shows the expired one (history).
        assert_eq!(
            store.list_routing(RoutingKind::Silence, acme).await?.len(),
            3
        );

        let mut tx = store.begin().await?;
        let moved = tx
            .update_routing(
                RoutingKind::Silence,
                acme,
                live.id,
                &span("{}", T0, T0 + 1),
                T0,
            )
            .await;
        commit(tx, moved).await?;
        let ids: Vec<Uuid> = store
            .all_routing(RoutingKind::Silence, T0 + 2)
            .await?
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![later.id], "{b}");
    }
    Ok(())
}

#[tokio::test]
async fn groups_are_saved_replaced_and_deleted_and_sends_are_logged() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?.id;
        let policy = Uuid::new_v4();
        let row = |state: &str, at: i64| RoutingGroupRow {
            policy_id: policy,
            group_key: "rule=r,org=o".into(),
            org_id: acme,
            state: state.into(),
            updated_at: at,
        };
        let mut tx = store.begin().await?;
        tx.save_routing_group(&row("one", T0)).await?;
        tx.save_routing_group(&row("two", T0 + 1)).await?;
        let sent = RoutingSent {
            notification_id: Uuid::new_v4(),
            org_id: acme,
            policy_id: policy,
            group_key: "rule=r,org=o".into(),
            integration_id: Uuid::new_v4(),
            kind: "firing".into(),
            total: 10_000,
            title: "[critical] cpu: 10000 firing".into(),
            created_at: T0,
        };
        tx.record_routing_sent(&sent).await?;
        tx.commit().await?;
        assert_eq!(
            store.routing_groups().await?,
            vec![row("two", T0 + 1)],
            "{b}"
        );
        assert_eq!(store.routing_sent(acme).await?, vec![sent.clone()], "{b}");

        // A rolled-back decision leaves neither its group state nor its send behind.
        let mut tx = store.begin().await?;
        tx.save_routing_group(&row("three", T0 + 2)).await?;
        tx.record_routing_sent(&RoutingSent {
            notification_id: Uuid::new_v4(),
            ..sent.clone()
        })
        .await?;
        tx.rollback().await?;
        assert_eq!(
            store.routing_groups().await?,
            vec![row("two", T0 + 1)],
            "{b}"
        );
        assert_eq!(store.routing_sent(acme).await?.len(), 1, "{b}");

        let mut tx = store.begin().await?;
        tx.delete_routing_group(policy, "rule=r,org=o").await?;
        tx.delete_routing_group(policy, "rule=r,org=o").await?;
        tx.commit().await?;
        assert!(store.routing_groups().await?.is_empty(), "{b}");
    }
    Ok(())
}
