//! Test support for Reap3r's crates, used only as a dev-dependency: throw-away databases on
//! both backends, raw SQL against a database for tests that tamper with rows or inject
//! faults, a database briefly unavailable to writers, and real local receivers for third parties
//! (an SMTP server with STARTTLS and implicit TLS, an HTTP webhook receiver) with a throw-away CA
//! for their certificates, and a TLS client pinned to one server certificate. Nothing here is
//! compiled into a production binary.

mod database;
mod outage;
mod smtp;
mod tls;
mod webhook;

pub use database::{POSTGRES_URL_ENV, REQUIRE_POSTGRES_ENV, TEST_DATABASE_PREFIX, TestDatabase};
pub use outage::WriteOutage;
pub use smtp::{ReceivedMail, SmtpOptions, SmtpReceiver, SmtpTlsMode};
pub use tls::{ServerCert, TestCa, pinned_client_config};
pub use webhook::{ReceivedRequest, WebhookReceiver, verify_signature};

use reap3r_store::{Result, install_drivers};
use sqlx::{AnyConnection, Connection};

/// Runs raw SQL (one or more statements) on the database at `url` over a connection of its own,
/// and returns the rows affected.
pub async fn execute_sql(url: &str, sql: &str) -> Result<u64> {
    install_drivers();
    let mut conn = AnyConnection::connect(url).await?;
    let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(done.rows_affected())
}
