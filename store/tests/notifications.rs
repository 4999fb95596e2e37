//! The notification integrations and the notifier's outbox (schema 0007), on every backend
//! available here: an enqueue rolled back leaves nothing; claims are guarded (one attempt per
//! claim, an expired claim is due again); attempts end delivered, retried or dead; a dead
//! letter can be queued again; everything is scoped to its organisation.

use anyhow::{Result, anyhow};
use reap3r_store::{
    AttemptEnd, Integration, IntegrationUpdate, NewIntegration, NewNotification,
    NotificationFilter, NotificationState, Store, StoreError, Uuid,
};

mod support;
use support::{T0, create_org, stores};

const LEASE: i64 = 30_000;

async fn integration(store: &Store, org_id: Uuid, name: &str) -> Result<Integration> {
    let mut tx = store.begin().await?;
    let row = tx
        .create_integration(
            &NewIntegration {
                id: Uuid::now_v7(),
                org_id,
                name: name.into(),
                kind: "webhook".into(),
                config: r#"{"url":"https://example.com/h"}"#.into(),
                secrets: r#"{"webhook_secret":"s"}"#.into(),
                enabled: true,
            },
            T0,
        )
        .await?;
    tx.commit().await?;
    Ok(row)
}

fn new_notification(org_id: Uuid, integration_id: Uuid) -> NewNotification {
    NewNotification {
        org_id,
        integration_id,
        kind: "firing".into(),
        message: "{}".into(),
        due_at: T0,
    }
}

async fn enqueue(store: &Store, org_id: Uuid, integration_id: Uuid) -> Result<Uuid> {
    let mut tx = store.begin().await?;
    let id = tx
        .enqueue_notification(&new_notification(org_id, integration_id), T0)
        .await?;
    tx.commit().await?;
    Ok(id)
}

async fn claim(store: &Store, id: Uuid, now: i64) -> Result<Option<i64>> {
    let mut tx = store.begin().await?;
    let claimed = tx.claim_notification(id, now, now + LEASE).await?;
    tx.commit().await?;
    Ok(claimed.map(|c| c.attempt))
}

async fn finish(store: &Store, id: Uuid, attempt: i64, end: AttemptEnd, now: i64) -> Result<bool> {
    let mut tx = store.begin().await?;
    let current = tx.finish_attempt(id, attempt, &end, now).await?;
    tx.commit().await?;
    Ok(current)
}

async fn state_of(
    store: &Store,
    org: Uuid,
    id: Uuid,
) -> Result<(NotificationState, i64, Option<String>)> {
    let n = store
        .notification(org, id)
        .await?
        .ok_or_else(|| anyhow!("notification {id} is gone"))?;
    Ok((n.state, n.attempts, n.last_error))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn integrations_are_scoped_named_uniquely_and_deleted_with_their_log() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "a", T0).await?.id;
        let other = create_org(&store, "b", T0).await?.id;
        let hook = integration(&store, org, "ops").await?;
        assert!(
            matches!(
                integration(&store, org, "ops")
                    .await
                    .map_err(|e| e.downcast::<StoreError>()),
                Err(Ok(StoreError::Conflict(_)))
            ),
            "{b}"
        );
        integration(&store, other, "ops").await?;
        assert_eq!(store.list_integrations(org).await?.len(), 1, "{b}");
        assert_eq!(
            store.integration(other, hook.id).await?,
            None,
            "{b}: another org's id"
        );

        let mut tx = store.begin().await?;
        let changed = tx
            .update_integration(
                org,
                hook.id,
                &IntegrationUpdate {
                    name: "ops2".into(),
                    config: hook.config.clone(),
                    secrets: r#"{"webhook_secret":"t"}"#.into(),
                    enabled: false,
                },
                T0 + 1,
            )
            .await?;
        tx.commit().await?;
        assert_eq!(
            (changed.name.as_str(), changed.enabled),
            ("ops2", false),
            "{b}"
        );
        assert_eq!(changed.updated_at, Some(T0 + 1), "{b}");

        let id = enqueue(&store, org, hook.id).await?;
        let mut tx = store.begin().await?;
        assert!(
            matches!(
                tx.delete_integration(other, hook.id).await,
                Err(StoreError::NotFound)
            ),
            "{b}"
        );
        tx.delete_integration(org, hook.id).await?;
        tx.commit().await?;
        assert_eq!(store.integration(org, hook.id).await?, None, "{b}");
        assert_eq!(
            store.notification(org, id).await?,
            None,
            "{b}: its log went with it"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enqueue_rolled_back_leaves_nothing_and_another_orgs_integration_is_refused()
-> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "a", T0).await?.id;
        let other = create_org(&store, "b", T0).await?.id;
        let hook = integration(&store, org, "ops").await?;
        let mut tx = store.begin().await?;
        let id = tx
            .enqueue_notification(&new_notification(org, hook.id), T0)
            .await?;
        tx.rollback().await?;
        assert_eq!(store.notification(org, id).await?, None, "{b}");
        assert_eq!(store.due_notifications(T0 + 1, 10).await?, vec![], "{b}");
        assert_eq!(store.next_notification_due().await?, None, "{b}");

        let mut tx = store.begin().await?;
        let refused = tx
            .enqueue_notification(&new_notification(other, hook.id), T0)
            .await;
        assert!(
            matches!(refused, Err(StoreError::NotFound)),
            "{b}: {refused:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_are_guarded_and_an_interrupted_attempt_is_due_again() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "a", T0).await?.id;
        let hook = integration(&store, org, "ops").await?;
        let id = enqueue(&store, org, hook.id).await?;
        assert_eq!(store.next_notification_due().await?, Some(T0), "{b}");
        assert_eq!(
            store.due_notifications(T0 - 1, 10).await?,
            vec![],
            "{b}: not yet due"
        );
        assert_eq!(
            store.due_notifications(T0, 10).await?,
            vec![(id, hook.id)],
            "{b}"
        );

        assert_eq!(claim(&store, id, T0).await?, Some(1), "{b}");
        assert_eq!(claim(&store, id, T0 + 1).await?, None, "{b}: claimed once");
        assert_eq!(store.due_notifications(T0 + 1, 10).await?, vec![], "{b}");
        assert_eq!(
            store.next_notification_due().await?,
            Some(T0 + LEASE),
            "{b}"
        );

        // The process died mid-attempt: once the claim expires the row is due again, as the
        // next attempt, and the old attempt can no longer record its end.
        assert_eq!(claim(&store, id, T0 + LEASE).await?, Some(2), "{b}");
        let stale = finish(
            &store,
            id,
            1,
            AttemptEnd::Delivered {
                answer: "late".into(),
            },
            T0 + LEASE,
        )
        .await?;
        assert!(!stale, "{b}");
        assert!(
            finish(
                &store,
                id,
                2,
                AttemptEnd::Delivered {
                    answer: "HTTP 200 OK".into()
                },
                T0 + LEASE + 5
            )
            .await?,
            "{b}"
        );
        let row = store
            .notification(org, id)
            .await?
            .ok_or_else(|| anyhow!("gone"))?;
        assert_eq!(row.state, NotificationState::Delivered, "{b}");
        assert_eq!(row.attempts, 2, "{b}");
        assert_eq!(row.last_answer.as_deref(), Some("HTTP 200 OK"), "{b}");
        assert_eq!(row.delivered_at, Some(T0 + LEASE + 5), "{b}");
        assert_eq!(
            claim(&store, id, T0 + 10 * LEASE).await?,
            None,
            "{b}: delivered is final"
        );
        assert_eq!(store.next_notification_due().await?, None, "{b}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_retry_then_dead_letter_and_a_dead_letter_can_be_queued_again() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "a", T0).await?.id;
        let other = create_org(&store, "b", T0).await?.id;
        let hook = integration(&store, org, "ops").await?;
        let id = enqueue(&store, org, hook.id).await?;

        let attempt = claim(&store, id, T0)
            .await?
            .ok_or_else(|| anyhow!("not claimed"))?;
        let retry = AttemptEnd::Retry {
            error: "attempt 1: HTTP 500".into(),
            retry_at: T0 + 5_000,
        };
        assert!(finish(&store, id, attempt, retry, T0 + 10).await?, "{b}");
        assert_eq!(
            state_of(&store, org, id).await?,
            (
                NotificationState::Pending,
                1,
                Some("attempt 1: HTTP 500".into())
            ),
            "{b}"
        );
        assert_eq!(
            claim(&store, id, T0 + 4_999).await?,
            None,
            "{b}: backoff not over"
        );
        assert_eq!(
            store.next_notification_due().await?,
            Some(T0 + 5_000),
            "{b}"
        );

        let attempt = claim(&store, id, T0 + 5_000)
            .await?
            .ok_or_else(|| anyhow!("not claimed"))?;
        assert_eq!(attempt, 2, "{b}");
        let dead = AttemptEnd::Dead {
            error: "attempt 2: HTTP 500".into(),
        };
        assert!(finish(&store, id, attempt, dead, T0 + 5_010).await?, "{b}");
        assert_eq!(
            state_of(&store, org, id).await?,
            (
                NotificationState::Dead,
                2,
                Some("attempt 2: HTTP 500".into())
            ),
            "{b}"
        );
        assert_eq!(
            claim(&store, id, T0 + 100_000).await?,
            None,
            "{b}: dead is not due"
        );

        let listed = store
            .list_notifications(
                org,
                &NotificationFilter {
                    state: Some(NotificationState::Dead),
                    integration_id: Some(hook.id),
                    limit: 10,
                },
            )
            .await?;
        assert_eq!(
            listed.iter().map(|n| n.id).collect::<Vec<_>>(),
            vec![id],
            "{b}"
        );
        let pending = store
            .list_notifications(
                org,
                &NotificationFilter {
                    state: Some(NotificationState::Pending),
                    integration_id: None,
                    limit: 10,
                },
            )
            .await?;
        assert!(pending.is_empty(), "{b}");
        assert!(
            store
                .list_notifications(
                    other,
                    &NotificationFilter {
                        limit: 10,
                        ..Default::default()
                    }
                )
                .await?
                .is_empty(),
            "{b}"
        );

        let mut tx = store.begin().await?;
        assert!(
            matches!(
                tx.retry_dead_notification(other, id, T0 + 6_000).await,
                Err(StoreError::NotFound)
            ),
            "{b}"
        );
        let again = tx.retry_dead_notification(org, id, T0 + 6_000).await?;
        tx.commit().await?;
        assert_eq!(
            (again.id, again.state, again.attempts),
            (id, NotificationState::Pending, 0),
            "{b}: same idempotency id"
        );
        let mut tx = store.begin().await?;
        assert!(
            matches!(
                tx.retry_dead_notification(org, id, T0 + 6_001).await,
                Err(StoreError::Conflict(_))
            ),
            "{b}: only dead letters"
        );
        drop(tx);
        assert_eq!(claim(&store, id, T0 + 6_000).await?, Some(1), "{b}");
    }
    Ok(())
}
