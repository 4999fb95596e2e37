//! Organisations.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orgs() -> Result<()> {
    for (db, store) in stores().await? {
        let b = db.backend();
        let acme = create_org(&store, "acme", T0).await?;
        check(b, "name", acme.name.as_str(), "acme");
        check(b, "created_at", acme.created_at, T0);
        check(
            b,
            "by name",
            store.find_org("acme").await?,
            Some(acme.clone()),
        );
        check(
            b,
            "by id",
            store.find_org(&acme.id.to_string()).await?,
            Some(acme.clone()),
        );
        check(
            b,
            "by upper-case id",
            store.find_org(&acme.id.to_string().to_uppercase()).await?,
            Some(acme.clone()),
        );
        check(b, "missing", store.find_org("nope").await?, None);
        assert!(
            matches!(
                create_org(&store, "acme", T0).await,
                Err(StoreError::Conflict(_))
            ),
            "[{b}] duplicate name"
        );
        assert!(
            matches!(
                create_org(&store, "  ", T0).await,
                Err(StoreError::Invalid(_))
            ),
            "[{b}] empty name"
        );

        // default_org is get-or-create, also when raced.
        let racers = (0..5).map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.default_org(T0 + i).await })
        });
        let mut ids = HashSet::new();
        for r in racers {
            ids.insert(r.await??.id);
        }
        check(b, "one default org", ids.len(), 1);
        let default = store.default_org(T0 + 99).await?;
        check(
            b,
            "default is stable",
            Some(default.id),
            ids.into_iter().next(),
        );
        check(b, "default name", default.name.as_str(), "default");
        store.close().await;
    }
    Ok(())
}
