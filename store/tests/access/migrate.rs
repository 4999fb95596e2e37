//! Upgrading a database from schema 0001 keeps its rows.

use sqlx::Connection;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_from_0001_keeps_data() -> Result<()> {
    for db in TestDatabase::all().await? {
        let b = db.backend();
        let init = match b {
            Backend::Sqlite => include_str!("../../../migrations/sqlite/0001_init.sql"),
            Backend::Postgres => include_str!("../../../migrations/postgres/0001_init.sql"),
        };
        sqlx::any::install_default_drivers();
        // A database as the previous release left it: schema 0001 and some rows.
        let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
        sqlx::raw_sql(init).execute(&mut conn).await?;
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY NOT NULL, \
             applied_at BIGINT NOT NULL); \
             INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0); \
             INSERT INTO orgs (id, name, created_at) \
             VALUES ('00000000-0000-4000-8000-000000000001', 'old', 1); \
             INSERT INTO users (id, org_id, email, password_hash, role, created_at) \
             VALUES ('00000000-0000-4000-8000-000000000002', \
                     '00000000-0000-4000-8000-000000000001', 'old@example.com', 'h', 'admin', 2);",
        )
        .execute(&mut conn)
        .await?;
        conn.close().await?;

        let store = db.open().await?;
        let old = store
            .user_by_email("old@example.com")
            .await?
            .ok_or_else(|| anyhow!("user lost"))?;
        check(b, "mfa off by default", old.mfa_enabled, false);
        check(b, "no secret", old.mfa_secret.clone(), None);
        check(b, "no display name", old.display_name.clone(), None);
        check(b, "no updated_at", old.updated_at, None);
        let org = store
            .org(old.org_id)
            .await?
            .ok_or_else(|| anyhow!("org lost"))?;
        check(b, "org kept", org.name.as_str(), "old");
        check(b, "no parent", org.parent_org_id, None);
        let agent = enrolled(&store, org.id, "after-upgrade", T0).await?;
        check(b, "unfiled", agent.folder_id, None);
        store.close().await;
    }
    Ok(())
}
