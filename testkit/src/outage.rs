//! A database that is briefly unavailable to a writer, for tests of what survives it: a
//! connection of its own holds a write lock, so a writer of the table waits. On SQLite the
//! writer gives up by itself after `busy_timeout` (SQLITE_BUSY); on PostgreSQL the waiting
//! writer's connection is terminated (as a restart or failover of the server does), which is
//! what [`WriteOutage::cut_waiters`] is for. Releasing the lock ends the outage.

use sqlx::{AnyConnection, Connection, Row};

use reap3r_store::{Backend, Result, install_drivers};

use crate::TestDatabase;

pub struct WriteOutage {
    conn: AnyConnection,
    backend: Backend,
}

impl WriteOutage {
    /// Takes the write lock on `table` (SQLite: the whole database's) and holds it.
    pub async fn begin(db: &TestDatabase, table: &str) -> Result<WriteOutage> {
        install_drivers();
        let mut conn = AnyConnection::connect(&db.url).await?;
        let sql = match db.backend() {
            Backend::Sqlite => "BEGIN IMMEDIATE".to_owned(),
            // The table name is the test's own constant, not input.
            Backend::Postgres => format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        Ok(WriteOutage {
            conn,
            backend: db.backend(),
        })
    }

    /// PostgreSQL: terminates the connections waiting for the lock and returns how many (0
    /// while none waits yet). SQLite: 0, its writers give up by themselves.
    pub async fn cut_waiters(&mut self) -> Result<usize> {
        if self.backend == Backend::Sqlite {
            return Ok(0);
        }
        let rows = sqlx::query(
            "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND wait_event_type = 'Lock'",
        )
        .fetch_all(&mut self.conn)
        .await?;
        let mut cut = 0;
        for row in &rows {
            if row.try_get::<bool, _>("cut")? {
                cut += 1;
            }
        }
        Ok(cut)
    }

    /// Ends the outage: the lock is released.
    pub async fn end(mut self) -> Result<()> {
        sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await?;
        self.conn.close().await?;
        Ok(())
    }
}
