//! File transfers: the content-addressed files an organisation holds (the bytes are in the
//! server's data dir; a row here says the organisation may read them) and each push or pull of
//! one file to or from one path on one agent.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{get_i64, get_opt_i64, get_opt_str, get_opt_uuid, get_str, get_uuid, uuid_text};
use crate::error::{Result, StoreError, map_constraint};
use crate::{Store, Tx};

/// Most rows one listing returns.
pub const MAX_FILE_PAGE: i64 = 500;

/// A file an organisation holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBlob {
    pub org_id: Uuid,
    /// BLAKE3 of the bytes, lowercase hex.
    pub blake3: String,
    pub size: i64,
    pub name: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDirectionRow {
    Push,
    Pull,
}

impl FileDirectionRow {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "push" => Ok(Self::Push),
            "pull" => Ok(Self::Pull),
            other => Err(StoreError::Invalid(format!(
                "unknown transfer direction {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStatus {
    Pending,
    Running,
    Complete,
    Failed,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(Self::Pending),
            "running" => Ok(Self::Running),
            "complete" => Ok(Self::Complete),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::Invalid(format!(
                "unknown transfer status {other:?}"
            ))),
        }
    }

    pub fn is_ended(self) -> bool {
        matches!(self, Self::Complete | Self::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFileTransfer {
    pub id: Uuid,
    pub org_id: Uuid,
    pub agent_id: Uuid,
    pub direction: FileDirectionRow,
    pub path: String,
    /// A push: the file sent, and its size.
    pub blake3: Option<String>,
    pub size: Option<i64>,
    pub user_id: Option<Uuid>,
    pub operator: String,
    pub node_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    pub id: Uuid,
    pub org_id: Uuid,
    pub agent_id: Uuid,
    pub direction: FileDirectionRow,
    pub path: String,
    pub blake3: Option<String>,
    pub size: Option<i64>,
    pub status: TransferStatus,
    pub bytes_done: i64,
    pub attempts: i64,
    pub user_id: Option<Uuid>,
    pub operator: String,
    pub node_id: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
}

/// How a transfer ended: complete (a pull names the file received) or failed (and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEnd {
    Complete { blake3: String, size: i64 },
    Failed { error: String },
}

const BLOB_COLS: &str = "org_id, blake3, size, name, created_by, created_at";
const COLS: &str = "id, org_id, agent_id, direction, path, blake3, size, status, bytes_done, \
                    attempts, user_id, operator, node_id, created_at, started_at, ended_at, error";

fn blob_from_row(row: &AnyRow) -> Result<FileBlob> {
    Ok(FileBlob {
        org_id: get_uuid(row, "org_id")?,
        blake3: get_str(row, "blake3")?,
        size: get_i64(row, "size")?,
        name: get_opt_str(row, "name")?,
        created_by: get_str(row, "created_by")?,
        created_at: get_i64(row, "created_at")?,
    })
}

fn from_row(row: &AnyRow) -> Result<FileTransfer> {
    Ok(FileTransfer {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        agent_id: get_uuid(row, "agent_id")?,
        direction: FileDirectionRow::parse(&get_str(row, "direction")?)?,
        path: get_str(row, "path")?,
        blake3: get_opt_str(row, "blake3")?,
        size: get_opt_i64(row, "size")?,
        status: TransferStatus::parse(&get_str(row, "status")?)?,
        bytes_done: get_i64(row, "bytes_done")?,
        attempts: get_i64(row, "attempts")?,
        user_id: get_opt_uuid(row, "user_id")?,
        operator: get_str(row, "operator")?,
        node_id: get_str(row, "node_id")?,
        created_at: get_i64(row, "created_at")?,
        started_at: get_opt_i64(row, "started_at")?,
        ended_at: get_opt_i64(row, "ended_at")?,
        error: get_opt_str(row, "error")?,
    })
}

impl Store {
    /// A file `org_id` holds.
    pub async fn file_blob(&self, org_id: Uuid, blake3: &str) -> Result<Option<FileBlob>> {
        let sql = format!("SELECT {BLOB_COLS} FROM file_blobs WHERE org_id = $1 AND blake3 = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .bind(blake3)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(blob_from_row).transpose()
    }

    /// The files `org_id` holds, newest first, at most `limit` (capped at [`MAX_FILE_PAGE`]).
    pub async fn list_file_blobs(&self, org_id: Uuid, limit: i64) -> Result<Vec<FileBlob>> {
        let sql = format!(
            "SELECT {BLOB_COLS} FROM file_blobs WHERE org_id = $1 \
             ORDER BY created_at DESC, blake3 LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .bind(limit.clamp(1, MAX_FILE_PAGE))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(blob_from_row).collect()
    }

    /// A transfer of `org_id`.
    pub async fn file_transfer(&self, org_id: Uuid, id: Uuid) -> Result<Option<FileTransfer>> {
        let sql = format!("SELECT {COLS} FROM file_transfers WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Transfers of `org_id` (of one agent, if given), newest first, at most `limit` (capped at
    /// [`MAX_FILE_PAGE`]).
    pub async fn list_file_transfers(
        &self,
        org_id: Uuid,
        agent_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<FileTransfer>> {
        let sql = format!(
            "SELECT {COLS} FROM file_transfers WHERE org_id = $1 \
             AND ($2 IS NULL OR agent_id = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(org_id))
            .bind(agent_id.map(uuid_text))
            .bind(limit.clamp(1, MAX_FILE_PAGE))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// A transfer opened its `attempt`th channel (it runs); a pull learns the file's size here.
    pub async fn start_file_attempt(
        &self,
        id: Uuid,
        attempt: i64,
        size: Option<i64>,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE file_transfers SET status = 'running', attempts = $2, \
             size = COALESCE($3, size), started_at = COALESCE(started_at, $4) \
             WHERE id = $1 AND status IN ('pending', 'running')",
        )
        .bind(uuid_text(id))
        .bind(attempt)
        .bind(size)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// How many bytes the receiver holds (progress).
    pub async fn file_progress(&self, id: Uuid, bytes_done: i64) -> Result<()> {
        sqlx::query(
            "UPDATE file_transfers SET bytes_done = $2 WHERE id = $1 AND status = 'running'",
        )
        .bind(uuid_text(id))
        .bind(bytes_done)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

impl Tx {
    /// Records that `org_id` holds a file; a file it held already keeps its first record.
    /// Returns the record.
    pub async fn put_file_blob(&mut self, blob: &FileBlob) -> Result<FileBlob> {
        sqlx::query(
            "INSERT INTO file_blobs (org_id, blake3, size, name, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, blake3) DO NOTHING",
        )
        .bind(uuid_text(blob.org_id))
        .bind(&blob.blake3)
        .bind(blob.size)
        .bind(blob.name.as_deref())
        .bind(&blob.created_by)
        .bind(blob.created_at)
        .execute(&mut *self.conn())
        .await
        .map_err(|e| map_constraint(e, "file exists", "no such organisation"))?;
        let sql = format!("SELECT {BLOB_COLS} FROM file_blobs WHERE org_id = $1 AND blake3 = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(blob.org_id))
            .bind(&blob.blake3)
            .fetch_one(&mut *self.conn())
            .await?;
        blob_from_row(&row)
    }

    pub async fn create_file_transfer(
        &mut self,
        new: &NewFileTransfer,
        now_ms: i64,
    ) -> Result<FileTransfer> {
        let sql = format!(
            "INSERT INTO file_transfers (id, org_id, agent_id, direction, path, blake3, size, \
             status, user_id, operator, node_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11) RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(new.id))
            .bind(uuid_text(new.org_id))
            .bind(uuid_text(new.agent_id))
            .bind(new.direction.as_str())
            .bind(&new.path)
            .bind(new.blake3.as_deref())
            .bind(new.size)
            .bind(new.user_id.map(uuid_text))
            .bind(&new.operator)
            .bind(&new.node_id)
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await
            .map_err(|e| map_constraint(e, "file transfer exists", "no such organisation"))?;
        from_row(&row)
    }

    /// Ends a transfer that has not ended; `None` if it had (or does not exist).
    pub async fn end_file_transfer(
        &mut self,
        id: Uuid,
        end: &TransferEnd,
        bytes_done: i64,
        now_ms: i64,
    ) -> Result<Option<FileTransfer>> {
        let (status, blake3, size, error) = match end {
            TransferEnd::Complete { blake3, size } => {
                ("complete", Some(blake3.as_str()), Some(*size), None)
            }
            TransferEnd::Failed { error } => ("failed", None, None, Some(error.as_str())),
        };
        let sql = format!(
            "UPDATE file_transfers SET status = $2, blake3 = COALESCE($3, blake3), \
             size = COALESCE($4, size), error = $5, bytes_done = $6, ended_at = $7 \
             WHERE id = $1 AND status IN ('pending', 'running') RETURNING {COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(status)
            .bind(blake3)
            .bind(size)
            .bind(error)
            .bind(bytes_done)
            .bind(now_ms)
            .fetch_optional(&mut *self.conn())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The transfers this node left unfinished (it stopped or crashed while they ran), to end.
    pub async fn open_transfers_of_node(&mut self, node_id: &str) -> Result<Vec<FileTransfer>> {
        let sql = format!(
            "SELECT {COLS} FROM file_transfers WHERE node_id = $1 \
             AND status IN ('pending', 'running')"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(node_id)
            .fetch_all(&mut *self.conn())
            .await?;
        rows.iter().map(from_row).collect()
    }
}
