//! Remote shell sessions and their recordings: who opened which shell on which agent, how it
//! ended and how many bytes went each way; the recording as gzip members in order.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_opt_i64, get_opt_str, get_opt_uuid, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Backend, Store, Tx};

/// Most sessions one listing returns.
pub const MAX_SHELL_PAGE: i64 = 500;
/// PostgreSQL advisory lock that serialises shell opens (counting against the limits, then
/// inserting).
const SHELL_OPEN_LOCK_KEY: i64 = 0x7233_7368_656c_6c31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellStatus {
    /// Granted; no channel attached yet.
    Pending,
    Active,
    Ended,
}

impl ShellStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "ended" => Ok(Self::Ended),
            other => Err(StoreError::Invalid(format!(
                "unknown shell status {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShellSession {
    pub id: Uuid,
    pub org_id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Option<Uuid>,
    pub operator: String,
    /// The credential that opened it (`session:<id>`, `api_key:<id>`, `cli`).
    pub opened_by: String,
    pub node_id: String,
    pub cols: u16,
    pub rows: u16,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellSession {
    pub id: Uuid,
    pub org_id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Option<Uuid>,
    pub operator: String,
    pub opened_by: String,
    pub node_id: String,
    pub status: ShellStatus,
    pub cols: i64,
    pub rows: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub recording_bytes: i64,
    pub recording_stored: i64,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellEnd {
    pub reason: String,
    pub exit_code: Option<i32>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

const COLS: &str = "id, org_id, agent_id, user_id, operator, opened_by, node_id, status, term_cols, \
                    term_rows, created_at, expires_at, started_at, ended_at, end_reason, \
                    exit_code, bytes_in, bytes_out, recording_bytes, recording_stored";

fn from_row(row: &AnyRow) -> Result<ShellSession> {
    Ok(ShellSession {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        agent_id: get_uuid(row, "agent_id")?,
        user_id: get_opt_uuid(row, "user_id")?,
        operator: get_str(row, "operator")?,
        opened_by: get_str(row, "opened_by")?,
        node_id: get_str(row, "node_id")?,
        status: ShellStatus::parse(&get_str(row, "status")?)?,
        cols: get_i64(row, "term_cols")?,
        rows: get_i64(row, "term_rows")?,
        created_at: get_i64(row, "created_at")?,
        expires_at: get_i64(row, "expires_at")?,
        started_at: get_opt_i64(row, "started_at")?,
        ended_at: get_opt_i64(row, "ended_at")?,
        end_reason: get_opt_str(row, "end_reason")?,
        exit_code: get_opt_i64(row, "exit_code")?,
        bytes_in: get_i64(row, "bytes_in")?,
        bytes_out: get_i64(row, "bytes_out")?,
        recording_bytes: get_i64(row, "recording_bytes")?,
        recording_stored: get_i64(row, "recording_stored")?,
    })
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// A session of `org_id`.
    pub async fn shell_session(&self, org_id: Uuid, id: Uuid) -> Result<Option<ShellSession>> {
        let sql = format!("SELECT {COLS} FROM shell_sessions WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Sessions of `org_id` (of one agent, if given), newest first, at most `limit`
    /// (capped at [`MAX_SHELL_PAGE`]).
    pub async fn list_shell_sessions(
        &self,
        org_id: Uuid,
        agent_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ShellSession>> {
        let sql = format!(
            "SELECT {COLS} FROM shell_sessions WHERE org_id = $1 \
             AND ($2 IS NULL OR agent_id = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .bind(agent_id.map(uuid_text))
            .bind(limit.clamp(1, MAX_SHELL_PAGE))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// The recording's chunks in order (each a gzip member; concatenated, one gzip file).
    pub async fn shell_recording(&self, session_id: Uuid) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT data FROM shell_recording_chunks WHERE session_id = $1 ORDER BY seq",
        )
        .bind(uuid_text(session_id))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(sqlx::Row::try_get::<Vec<u8>, _>(r, "data")?))
            .collect()
    }

    /// Appends chunk `seq` of a recording; `recording_bytes` is the uncompressed total so far.
    pub async fn append_shell_recording(
        &self,
        session_id: Uuid,
        seq: i64,
        data: &[u8],
        recording_bytes: u64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO shell_recording_chunks (session_id, seq, data) VALUES ($1, $2, $3)",
        )
        .bind(uuid_text(session_id))
        .bind(seq)
        .bind(data.to_vec())
        .execute(&mut *tx.conn())
        .await
        .map_err(|e| map_constraint(e, "recording chunk exists", "no such shell session"))?;
        sqlx::query(
            "UPDATE shell_sessions SET recording_bytes = $2, \
             recording_stored = recording_stored + $3 WHERE id = $1",
        )
        .bind(uuid_text(session_id))
        .bind(clamp_i64(recording_bytes))
        .bind(data.len() as i64)
        .execute(&mut *tx.conn())
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the recordings of sessions that ended before `before_ms` (the sessions stay);
    /// returns how many chunks went.
    pub async fn prune_shell_recordings(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM shell_recording_chunks WHERE session_id IN \
             (SELECT id FROM shell_sessions WHERE status = 'ended' AND ended_at < $1)",
        )
        .bind(before_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}

impl Tx {
    /// Sessions not ended yet on `agent_id`, and those of `user_id` (when given), among those
    /// created since `live_since` (older ones cannot still run: a row left open by a node that
    /// never came back does not hold a place).
    ///
    /// Opens are serialised (SQLite: the transaction's write lock; PostgreSQL: an advisory lock
    /// held until commit), so a count followed by the insert in the same transaction cannot be
    /// raced past a limit.
    pub async fn open_shell_counts(
        &mut self,
        agent_id: Uuid,
        user_id: Option<Uuid>,
        live_since: i64,
    ) -> Result<(i64, i64)> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SHELL_OPEN_LOCK_KEY)
                .execute(&mut *self.conn())
                .await?;
        }
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM shell_sessions WHERE agent_id = $1 AND status <> 'ended' \
                  AND created_at >= $3) AS per_agent, \
               (SELECT COUNT(*) FROM shell_sessions WHERE user_id = $2 AND status <> 'ended' \
                  AND created_at >= $3) AS per_user",
        )
        .bind(uuid_text(agent_id))
        .bind(user_id.map(uuid_text))
        .bind(live_since)
        .fetch_one(&mut *self.conn())
        .await?;
        Ok((get_i64(&row, "per_agent")?, get_i64(&row, "per_user")?))
    }

    pub async fn create_shell_session(
        &mut self,
        new: &NewShellSession,
        now_ms: i64,
    ) -> Result<ShellSession> {
        let sql = format!(
            "INSERT INTO shell_sessions (id, org_id, agent_id, user_id, operator, opened_by, \
             node_id, status, term_cols, term_rows, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11) RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(new.id))
            .bind(uuid_text(new.org_id))
            .bind(uuid_text(new.agent_id))
            .bind(new.user_id.map(uuid_text))
            .bind(&new.operator)
            .bind(&new.opened_by)
            .bind(&new.node_id)
            .bind(i64::from(new.cols))
            .bind(i64::from(new.rows))
            .bind(now_ms)
            .bind(new.expires_at)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| map_constraint(e, "shell session exists", "no such organisation"))?;
        from_row(&row)
    }

    /// Marks a pending session active; false if it is not pending.
    pub async fn start_shell_session(&mut self, id: Uuid, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE shell_sessions SET status = 'active', started_at = $2 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(uuid_text(id))
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a session that has not ended; `None` if it had (or does not exist).
    pub async fn end_shell_session(
        &mut self,
        id: Uuid,
        end: &ShellEnd,
        now_ms: i64,
    ) -> Result<Option<ShellSession>> {
        let sql = format!(
            "UPDATE shell_sessions SET status = 'ended', ended_at = $2, end_reason = $3, \
             exit_code = $4, bytes_in = $5, bytes_out = $6 \
             WHERE id = $1 AND status <> 'ended' RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(now_ms)
            .bind(&end.reason)
            .bind(end.exit_code.map(i64::from))
            .bind(clamp_i64(end.bytes_in))
            .bind(clamp_i64(end.bytes_out))
            .fetch_optional(&mut *self.conn())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The sessions this node left open (it stopped or crashed while they ran), to end.
    pub async fn open_shells_of_node(&mut self, node_id: &str) -> Result<Vec<ShellSession>> {
        let sql =
            format!("SELECT {COLS} FROM shell_sessions WHERE node_id = $1 AND status <> 'ended'");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(node_id)
            .fetch_all(&mut *self.conn())
            .await?;
        rows.iter().map(from_row).collect()
    }
}
