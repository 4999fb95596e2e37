//! Persistence for Reap3r: domain records and their storage in SQLite or PostgreSQL.
//!
//! One code path serves both databases through sqlx's `Any` driver; the only dialect-specific
//! pieces are the migration files, how a write transaction starts and how cross-process locks are
//! taken. Time is always passed in (`now_ms`), never read here, so callers can test time logic.

mod agents;
mod alerts;
mod api_keys;
mod audit;
mod db;
mod error;
mod files;
mod groups;
mod jobs;
mod login_events;
mod metrics;
mod migrate;
mod notifications;
mod notify_routing;
mod orgs;
mod releases;
mod sessions;
mod shell;
mod tokens;
mod tx;
mod users;
mod vault;

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Transaction};

pub use agents::{
    Agent, AgentApproval, AgentCursor, AgentFilter, AgentHello, AgentStats, AgentStatus,
    MAX_AGENT_PAGE, NewAgent,
};
pub use alerts::{
    AlertAgent, AlertEvent, AlertEventFilter, AlertHistoryEntry, AlertNote, AlertRule,
    AlertRuleState, AlertRuleUpdate, AlertStats, MAX_ALERT_EVENT_PAGE, MAX_ALERT_NOTE_CHARS,
    NewAlertEvent, NewAlertRule, SYSTEM_ACTOR,
};
pub use api_keys::{ApiKey, NewApiKey};
pub use audit::{
    AuditFilter, AuditRecord, ChainReport, GENESIS_HASH, MAX_AUDIT_PAGE, NewAuditEntry,
};
pub use error::{Result, StoreError, TokenRefusal};
pub use files::{
    FileBlob, FileDirectionRow, FileTransfer, MAX_FILE_PAGE, NewFileTransfer, TransferEnd,
    TransferStatus,
};
pub use groups::{AgentPlacement, Group, GroupKind, GroupUpdate, MAX_GROUP_NAME_CHARS, NewGroup};
pub use jobs::{
    Job, JobFilter, JobStats, JobStatus, JobTarget, JobTargetGrant, JobTargetSelector,
    MAX_JOB_PAGE, MAX_JOB_TARGET_PAGE, NewJob, NewJobTarget, TargetCounts, TargetOutcome,
    TargetState, TargetTransition,
};
pub use login_events::{
    LoginEvent, LoginEventFilter, MAX_LOGIN_DETAIL_CHARS, MAX_LOGIN_EMAIL_CHARS,
    MAX_LOGIN_EVENT_PAGE, NewLoginEvent,
};
pub use metrics::{
    Agg, FleetFilter, LatestSample, MetricLevel, MetricStorage, NewSample, Point, RollupPass,
    SeriesRow, merge_series,
};
pub use notifications::{
    AttemptEnd, ClaimedNotification, Integration, IntegrationUpdate, MAX_NOTIFICATION_PAGE,
    NewIntegration, NewNotification, Notification, NotificationFilter, NotificationState,
};
pub use notify_routing::{RoutingGroupRow, RoutingKind, RoutingRecord, RoutingSent, RoutingWrite};
pub use orgs::{DEFAULT_ORG_NAME, Org, OrgAssignment};
pub use releases::AgentRelease;
pub use sessions::{
    AuthSession, ChallengeCheck, NewAuthSession, REFRESH_REUSE_REASON, RefreshOutcome,
};
pub use shell::{MAX_SHELL_PAGE, NewShellSession, ShellEnd, ShellSession, ShellStatus};
pub use tokens::{EnrolmentToken, NewEnrolmentToken};
pub use tx::Tx;
pub use users::{NewUser, User, UserUpdate};
pub use uuid::Uuid;
pub use vault::{
    GrantFlags, MAX_ACCESS_LOG_PAGE, MAX_SECRET_PAGE, MasterKeyRow, NewSecret, NewSecretAccess,
    NewSecretGrant, NewSecretVersion, RotationPolicyRow, SealedColumn, SealedRow, SecretAccess,
    SecretFilter, SecretGrant, SecretMetaUpdate, SecretRow, SecretVersionRow, VaultCounts, Viewer,
};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            // The URL may carry a password, so it is not echoed back.
            Err(StoreError::Invalid(
                "database url must start with sqlite: or postgres://".into(),
            ))
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Handle to the database. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

static INSTALL_DRIVERS: Once = Once::new();

/// How long SQLite waits for another connection's write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

impl Store {
    /// Opens `sqlite://path?mode=rwc` or `postgres://...` and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store> {
        install_drivers();
        let backend = Backend::from_url(url)?;
        let options: AnyConnectOptions = url.parse()?;
        let pool = match backend {
            Backend::Sqlite => {
                enable_wal(&options).await?;
                AnyPoolOptions::new()
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // Per-connection settings: SQLite forgets them when a connection
                            // closes. WAL is persistent in the file and was set above.
                            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
                                 PRAGMA foreign_keys = ON; \
                                 PRAGMA synchronous = NORMAL;"
                            )))
                            .execute(conn)
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => AnyPoolOptions::new().connect_with(options).await?,
        };
        let store = Store { pool, backend };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// Opens (creating if missing, with its parent directory) the SQLite file at `path`.
    pub async fn open_sqlite_file(path: &Path) -> Result<Store> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError::Invalid(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        Store::open(&sqlite_url(path)?).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs arbitrary SQL. Only for tests that need to tamper with rows: compiled with the
    /// `test-support` feature, which only test crates enable.
    #[cfg(feature = "test-support")]
    pub async fn raw_execute(&self, sql: &str) -> Result<u64> {
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Every row of a query, its text columns joined by spaces (NULLs and non-text columns
    /// left out): for tests that grep what the database holds. Behind `test-support`.
    #[cfg(feature = "test-support")]
    pub async fn raw_query_text(&self, sql: &str) -> Result<Vec<String>> {
        use sqlx::Row;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .filter_map(|i| row.try_get::<String, _>(i).ok())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and then writes can fail with
    /// SQLITE_BUSY without waiting when another connection wrote in between, whereas taking the
    /// lock at BEGIN waits politely for `busy_timeout`.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// Switches the file to WAL so readers and the single writer do not block each other across
/// processes. The switch needs an exclusive lock that `busy_timeout` does not wait for, so it is
/// retried by hand; once a file is in WAL mode this is a cheap no-op.
async fn enable_wal(options: &AnyConnectOptions) -> Result<()> {
    let mut conn = options.connect().await?;
    let mut attempts = 0u32;
    let outcome = loop {
        let mode: std::result::Result<String, sqlx::Error> =
            sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&mut conn)
                .await;
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => break Ok(()),
            Ok(mode) => {
                // In-memory databases answer "memory": WAL does not apply there.
                tracing::warn!(%mode, "sqlite did not switch to WAL journal mode");
                break Ok(());
            }
            Err(e) if is_sqlite_busy(&e) && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS / 50)).await;
            }
            Err(e) => break Err(e.into()),
        }
    };
    conn.close().await?;
    outcome
}

fn is_sqlite_busy(err: &sqlx::Error) -> bool {
    match err {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), including their extended codes.
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Installs sqlx's `Any` drivers once per process (opening a store does it too).
pub fn install_drivers() {
    INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
}

/// Builds a `sqlite://` URL for a path, percent-encoding what would otherwise be read as URL
/// syntax (sqlx decodes the path part again).
pub fn sqlite_url(path: &Path) -> Result<String> {
    let Some(text) = path.to_str() else {
        return Err(StoreError::Invalid(
            "sqlite path must be valid UTF-8".into(),
        ));
    };
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~' | b':') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(format!("sqlite://{encoded}?mode=rwc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_escape_url_syntax() {
        assert_eq!(
            sqlite_url(Path::new("/var/lib/reap3r/reap3r.db")).unwrap(),
            "sqlite:///var/lib/reap3r/reap3r.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url(Path::new("/tmp/a b?#%.db")).unwrap(),
            "sqlite:///tmp/a%20b%3F%23%25.db?mode=rwc"
        );
    }

    #[test]
    fn backend_is_read_from_the_scheme() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("postgres://u:p@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::from_url("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn sqlite_connections_use_wal_normal_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_file(&dir.path().join("reap3r.db"))
            .await
            .unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // 1 = NORMAL.
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(sync, 1);
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(busy, 5000);
    }
}
