//! API keys: scoped to their organisation.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_are_scoped() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let org = create_org(&store, "acme", T0).await?;
        let other = create_org(&store, "other", T0).await?;
        let u = user(&store, &org, "k@example.com").await?;
        let new = |n: u32| NewApiKey {
            org_id: org.id,
            user_id: u.id,
            name: format!(" key {n} "),
            prefix: format!("r3k_{n:04}"),
            key_hash: hash_of(&format!("key-{n}")),
            scopes: vec!["agents:read".into(), "audit:read".into()],
            expires_at: Some(T0 + 1_000_000),
        };
        let k1 = store.create_api_key(&new(1), T0).await?;
        let k2 = store.create_api_key(&new(2), T0 + 1).await?;
        check(b, "name trimmed", k1.name.as_str(), "key 1");
        check(b, "scopes", k1.scopes.clone(), new(1).scopes);
        check(b, "never used", k1.last_used_at, None);
        check(
            b,
            "by hash",
            store.api_key_by_hash(&hash_of("key-1")).await?,
            Some(k1.clone()),
        );
        check(
            b,
            "by unknown hash",
            store.api_key_by_hash("nope").await?,
            None,
        );
        check(
            b,
            "newest first",
            store.list_api_keys(org.id).await?,
            vec![k2.clone(), k1.clone()],
        );
        check(b, "other org", store.list_api_keys(other.id).await?, vec![]);
        for (case, key, want) in [
            ("duplicate hash", new(1), "conflict"),
            (
                "unknown user",
                NewApiKey {
                    user_id: Uuid::new_v4(),
                    ..new(3)
                },
                "invalid",
            ),
            (
                "empty name",
                NewApiKey {
                    name: "  ".into(),
                    ..new(4)
                },
                "invalid",
            ),
        ] {
            check(b, case, kind(store.create_api_key(&key, T0).await), want);
        }

        store.touch_api_key(k1.id, T0 + 10, 60_000).await?;
        let used = |s: Store| async move {
            Ok::<_, anyhow::Error>(
                s.api_key_by_hash(&hash_of("key-1"))
                    .await?
                    .and_then(|k| k.last_used_at),
            )
        };
        check(b, "first touch", used(store.clone()).await?, Some(T0 + 10));
        store.touch_api_key(k1.id, T0 + 20, 60_000).await?;
        check(
            b,
            "touch too soon",
            used(store.clone()).await?,
            Some(T0 + 10),
        );
        store.touch_api_key(k1.id, T0 + 70_011, 60_000).await?;
        check(
            b,
            "touch later",
            used(store.clone()).await?,
            Some(T0 + 70_011),
        );

        check(
            b,
            "delete from other org",
            kind(store.delete_api_key(other.id, k1.id).await),
            "not_found",
        );
        store.delete_api_key(org.id, k1.id).await?;
        check(
            b,
            "deleted",
            store.api_key_by_hash(&hash_of("key-1")).await?,
            None,
        );
        check(
            b,
            "delete twice",
            kind(store.delete_api_key(org.id, k1.id).await),
            "not_found",
        );
        store.close().await;
    }
    Ok(())
}
