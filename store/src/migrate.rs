//! Our own small migration runner: embedded SQL files per dialect, a `schema_migrations` table,
//! one transaction per migration, safe when the CLI and the server migrate at the same moment.

use sqlx::Row;

use crate::error::{Result, StoreError};
use crate::{Backend, Store};

/// (version, sql). Versions are applied in order and never edited once released.
const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_access.sql")),
    (3, include_str!("../../migrations/sqlite/0003_jobs.sql")),
    (4, include_str!("../../migrations/sqlite/0004_metrics.sql")),
    (5, include_str!("../../migrations/sqlite/0005_alerts.sql")),
    (
        6,
        include_str!("../../migrations/sqlite/0006_notify_routing.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/0007_notifications.sql"),
    ),
    (
        8,
        include_str!("../../migrations/sqlite/0008_alert_reconcile.sql"),
    ),
    (9, include_str!("../../migrations/sqlite/0009_vault.sql")),
    (
        10,
        include_str!("../../migrations/sqlite/0010_sealed_env.sql"),
    ),
    (11, include_str!("../../migrations/sqlite/0011_shell.sql")),
    (12, include_str!("../../migrations/sqlite/0012_files.sql")),
    (
        13,
        include_str!("../../migrations/sqlite/0013_releases.sql"),
    ),
];
const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_access.sql")),
    (3, include_str!("../../migrations/postgres/0003_jobs.sql")),
    (
        4,
        include_str!("../../migrations/postgres/0004_metrics.sql"),
    ),
    (5, include_str!("../../migrations/postgres/0005_alerts.sql")),
    (
        6,
        include_str!("../../migrations/postgres/0006_notify_routing.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_notifications.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_alert_reconcile.sql"),
    ),
    (9, include_str!("../../migrations/postgres/0009_vault.sql")),
    (
        10,
        include_str!("../../migrations/postgres/0010_sealed_env.sql"),
    ),
    (11, include_str!("../../migrations/postgres/0011_shell.sql")),
    (12, include_str!("../../migrations/postgres/0012_files.sql")),
    (
        13,
        include_str!("../../migrations/postgres/0013_releases.sql"),
    ),
];

/// Advisory-lock key that serialises migrations across processes on PostgreSQL ("R3MIGRAT").
const MIGRATE_LOCK_KEY: i64 = 0x5233_4d49_4752_4154;

/// The applied-at stamp is taken from the database clock: it is bookkeeping, and keeping it out
/// of Rust keeps the rule that the store never reads time itself.
const SQLITE_NOW_MS: &str = "INSERT INTO schema_migrations (version, applied_at) \
     VALUES ($1, CAST((julianday('now') - 2440587.5) * 86400000 AS BIGINT))";
const POSTGRES_NOW_MS: &str = "INSERT INTO schema_migrations (version, applied_at) \
     VALUES ($1, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))";

pub(crate) async fn run(store: &Store) -> Result<()> {
    let (migrations, record) = match store.backend() {
        Backend::Sqlite => (SQLITE, SQLITE_NOW_MS),
        Backend::Postgres => (POSTGRES, POSTGRES_NOW_MS),
    };
    let latest = migrations.iter().map(|(v, _)| *v).max().unwrap_or(0);
    for &(version, sql) in migrations {
        // Each migration re-checks under the lock, so a second process that waited for the first
        // one's transaction sees the version as done and skips it.
        let mut tx = store.begin_write().await?;
        if store.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATE_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version BIGINT PRIMARY KEY NOT NULL, \
                 applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let newest: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?
            .try_get::<Option<i64>, _>("v")?;
        if let Some(newest) = newest.filter(|n| *n > latest) {
            // A newer binary migrated this database; running old code on it could corrupt data.
            return Err(StoreError::Migration(format!(
                "database schema is at version {newest}, newer than this build knows ({latest})"
            )));
        }
        let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if applied {
            tx.commit().await?;
            continue;
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Migration(format!("version {version}: {e}")))?;
        sqlx::query(record).bind(version).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(version, backend = %store.backend(), "applied database migration");
    }
    Ok(())
}
