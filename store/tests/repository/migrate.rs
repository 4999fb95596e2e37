//! Opening a store: migrations are idempotent and safe to race, a database from a newer build
//! is refused, and a SQLite file is created with its directory.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_and_safe_to_race() -> Result<()> {
    for db in TestDatabase::all().await? {
        let b = db.backend();
        // Two "processes" migrating a brand-new database at the same moment.
        let (a, c) = tokio::join!(db.open(), db.open());
        let (a, c) = (a?, c?);
        let org = create_org(&a, "acme", T0).await?;
        check(
            b,
            "visible to the other pool",
            c.find_org("acme").await?,
            Some(org.clone()),
        );
        // Reopening an up-to-date database changes nothing.
        let again = db.open().await?;
        again.ping().await?;
        check(
            b,
            "data survives reopen",
            again.find_org("acme").await?,
            Some(org),
        );
        check(
            b,
            "one row per migration",
            again
                .raw_execute("UPDATE schema_migrations SET version = version")
                .await?,
            // 0001-0013.
            13,
        );
        for s in [a, c, again] {
            s.close().await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_from_a_newer_build_is_refused() -> Result<()> {
    for db in TestDatabase::all().await? {
        let store = db.open().await?;
        store
            .raw_execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
            .await?;
        store.close().await;
        let err = db.open().await.err();
        assert!(
            matches!(err, Some(StoreError::Migration(_))),
            "[{}] {err:?}",
            db.backend()
        );
    }
    Ok(())
}

#[tokio::test]
async fn open_sqlite_file_creates_the_file_and_its_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested dir").join("reap3r.db");
    let store = Store::open_sqlite_file(&path).await?;
    assert_eq!(store.backend(), Backend::Sqlite);
    store.default_org(T0).await?;
    store.close().await;
    assert!(path.exists());
    let reopened = Store::open_sqlite_file(&path).await?;
    assert_eq!(
        reopened.find_org("default").await?.map(|o| o.name),
        Some("default".into())
    );
    reopened.close().await;
    Ok(())
}
