//! Throw-away databases: a fresh SQLite file in a temporary directory, and, when
//! `REAP3R_TEST_POSTGRES_URL` names a server, a fresh PostgreSQL database on it. Both are removed
//! again when the [`TestDatabase`] is dropped.

use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use uuid::Uuid;

use reap3r_store::{Backend, Result, Store, StoreError, install_drivers, sqlite_url};

/// Admin URL of a PostgreSQL server tests may create databases on.
pub const POSTGRES_URL_ENV: &str = "REAP3R_TEST_POSTGRES_URL";
/// Set to `1` to make a missing PostgreSQL an error instead of a silent skip (CI).
pub const REQUIRE_POSTGRES_ENV: &str = "REAP3R_REQUIRE_POSTGRES";

/// Prefix of every database [`TestDatabase::postgres`] creates, so strays are easy to find.
pub const TEST_DATABASE_PREFIX: &str = "reap3r_t_";

pub struct TestDatabase {
    /// What to pass to [`Store::open`].
    pub url: String,
    backend: Backend,
    /// Keeps the SQLite file's directory alive; removed on drop.
    _dir: Option<tempfile::TempDir>,
    postgres: Option<PgCleanup>,
}

struct PgCleanup {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A fresh SQLite file in a new temporary directory.
    pub async fn sqlite() -> Result<TestDatabase> {
        let dir = tempfile::Builder::new()
            .prefix("reap3r-store-")
            .tempdir()
            .map_err(|e| StoreError::Invalid(format!("cannot create temp dir: {e}")))?;
        let url = sqlite_url(&dir.path().join("reap3r.db"))?;
        Ok(TestDatabase {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            postgres: None,
        })
    }

    /// A fresh, empty PostgreSQL database, or `None` when no server is configured (an error
    /// instead when `REAP3R_REQUIRE_POSTGRES=1`).
    pub async fn postgres() -> Result<Option<TestDatabase>> {
        let admin_url = match std::env::var(POSTGRES_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => url,
            _ if std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| v.trim() == "1") => {
                return Err(StoreError::Invalid(format!(
                    "{REQUIRE_POSTGRES_ENV}=1 but {POSTGRES_URL_ENV} is not set; point it at a \
                     PostgreSQL server where tests may create databases, e.g. \
                     postgres://postgres@127.0.0.1:5432/postgres"
                )));
            }
            _ => return Ok(None),
        };
        install_drivers();
        let name = format!("{TEST_DATABASE_PREFIX}{}", Uuid::new_v4().simple());
        let mut admin = AnyConnection::connect(&admin_url).await?;
        // The name is ours (prefix + hex), so formatting it into the statement is safe.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Some(TestDatabase {
            url: with_database(&admin_url, &name)?,
            backend: Backend::Postgres,
            _dir: None,
            postgres: Some(PgCleanup { admin_url, name }),
        }))
    }

    /// SQLite, plus PostgreSQL when it is available; tests loop over all of them.
    pub async fn all() -> Result<Vec<TestDatabase>> {
        let mut all = vec![TestDatabase::sqlite().await?];
        all.extend(TestDatabase::postgres().await?);
        Ok(all)
    }

    /// Opens (and migrates) a store on this database. May be called more than once.
    pub async fn open(&self) -> Result<Store> {
        Store::open(&self.url).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs raw SQL on this database, outside any store: for tests that tamper with rows or
    /// install faults (a trigger that makes the audit insert fail).
    pub async fn execute(&self, sql: &str) -> Result<u64> {
        crate::execute_sql(&self.url, sql).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(pg) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, where we cannot block on async work; a separate
        // thread with its own small runtime can. Joining keeps the database from outliving the
        // test process. Failures only leave a stray `reap3r_t_*` database behind.
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let drop_it = async {
                    let mut admin = AnyConnection::connect(&pg.admin_url).await?;
                    // FORCE ends connections the test's pool still holds.
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        pg.name
                    )))
                    .execute(&mut admin)
                    .await?;
                    admin.close().await
                };
                match tokio::time::timeout(Duration::from_secs(10), drop_it).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(db = %pg.name, "cannot drop test database: {e}"),
                    Err(_) => tracing::warn!(db = %pg.name, "timed out dropping test database"),
                }
            });
        });
        let _ = handle.join();
    }
}

/// Replaces the database name (the URL path) of a PostgreSQL URL, keeping credentials, host and
/// query parameters.
fn with_database(url: &str, name: &str) -> Result<String> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Err(StoreError::Invalid(format!(
            "{POSTGRES_URL_ENV} is not a postgres:// URL"
        )));
    };
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_swapped_in() {
        let cases = [
            ("postgres://u:p@h:5432/postgres", "postgres://u:p@h:5432/db"),
            ("postgres://h", "postgres://h/db"),
            ("postgres://h/", "postgres://h/db"),
            (
                "postgresql://h/postgres?sslmode=disable",
                "postgresql://h/db?sslmode=disable",
            ),
            (
                "postgres://h?sslmode=disable",
                "postgres://h/db?sslmode=disable",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(with_database(input, "db").unwrap(), want, "{input}");
        }
        assert!(with_database("nope", "db").is_err());
    }
}
