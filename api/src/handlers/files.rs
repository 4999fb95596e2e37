//! Files: upload one to the server, list and download (with HTTP range requests) what the
//! organisation holds, push one to an agent, pull one from an agent, follow transfers. The
//! operations are the domain's (`reap3r_actors::files`); progress also goes out on `/api/ws` as
//! `file_transfer` events.

use poem::Body;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use reap3r_actors::files::{
    FileHub, GetFileTransfer, ListFileTransfers, ListFiles, OpenFile, PullFile, PushFile,
    UploadFile,
};
use reap3r_store::{FileBlob, FileDirectionRow, FileTransfer, MAX_FILE_PAGE, TransferStatus, Uuid};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ApiTags;
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

fn hub(ctx: &ApiContext) -> ApiResult<&FileHub> {
    ctx.files
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("file transfers are not running"))
}

/// A file the organisation holds, named by its BLAKE3.
#[derive(Debug, Object)]
pub struct FileView {
    /// BLAKE3 of the bytes, 64 lowercase hex digits: the file's id.
    pub blake3: String,
    pub size: i64,
    /// The upload's name, or the last component of the pulled path.
    pub name: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// Where to download it.
    pub download_path: String,
}

impl From<FileBlob> for FileView {
    fn from(b: FileBlob) -> Self {
        Self {
            download_path: format!("/api/files/{}", b.blake3),
            blake3: b.blake3,
            size: b.size,
            name: b.name,
            created_by: b.created_by,
            created_at: b.created_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TransferDirectionView {
    /// Server → agent.
    Push,
    /// Agent → server.
    Pull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TransferStatusView {
    Pending,
    Running,
    Complete,
    Failed,
}

/// One push or pull. `bytes_done` is what the receiver holds, verified chunk by chunk;
/// `attempts` above 1 means it resumed after a cut.
#[derive(Debug, Object)]
pub struct TransferView {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub direction: TransferDirectionView,
    /// The absolute path on the agent.
    pub path: String,
    /// A push: the file sent. A pull: the file received, once complete (download it at
    /// `/api/files/{blake3}`).
    pub blake3: Option<String>,
    pub size: Option<i64>,
    pub status: TransferStatusView,
    pub bytes_done: i64,
    pub attempts: i64,
    pub operator: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
}

impl From<FileTransfer> for TransferView {
    fn from(t: FileTransfer) -> Self {
        Self {
            id: t.id,
            agent_id: t.agent_id,
            direction: match t.direction {
                FileDirectionRow::Push => TransferDirectionView::Push,
                FileDirectionRow::Pull => TransferDirectionView::Pull,
            },
            path: t.path,
            blake3: t.blake3,
            size: t.size,
            status: match t.status {
                TransferStatus::Pending => TransferStatusView::Pending,
                TransferStatus::Running => TransferStatusView::Running,
                TransferStatus::Complete => TransferStatusView::Complete,
                TransferStatus::Failed => TransferStatusView::Failed,
            },
            bytes_done: t.bytes_done,
            attempts: t.attempts,
            operator: t.operator,
            created_at: t.created_at,
            started_at: t.started_at,
            ended_at: t.ended_at,
            error: t.error,
        }
    }
}

#[derive(Debug, Object)]
pub struct PushRequest {
    /// A file the organisation holds (`POST /api/files` answers it).
    pub blake3: String,
    /// Absolute path on the agent; an existing regular file there is replaced.
    pub path: String,
}

#[derive(Debug, Object)]
pub struct PullRequest {
    /// Absolute path of a regular file on the agent.
    pub path: String,
}

#[derive(Debug, ApiResponse)]
pub enum Uploaded {
    /// Stored (the same bytes uploaded before are the same file).
    #[oai(status = 201)]
    Created(Json<FileView>),
}

#[derive(Debug, ApiResponse)]
pub enum TransferStarted {
    /// The transfer runs; follow it at `/api/transfers/{id}` or on `/api/ws`.
    #[oai(status = 202)]
    Accepted(Json<TransferView>),
}

#[derive(Debug, ApiResponse)]
pub enum Download {
    /// The whole file.
    #[oai(status = 200, content_type = "application/octet-stream")]
    Whole(
        Binary<Body>,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Accept-Ranges")] String,
        #[oai(header = "ETag")] String,
        #[oai(header = "Content-Disposition")] String,
    ),
    /// The range asked for (`Range: bytes=start-end`, one range).
    #[oai(status = 206, content_type = "application/octet-stream")]
    Partial(
        Binary<Body>,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Content-Range")] String,
        #[oai(header = "ETag")] String,
    ),
    /// The range starts past the end; `Content-Range` says the file's size.
    #[oai(status = 416)]
    Unsatisfiable(#[oai(header = "Content-Range")] String),
}

/// What a `Range` header asks of a `size`-byte file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// Bytes `start..=end`.
    Range(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`); anything else (several ranges, other units, bad
/// syntax) is answered with the whole file, as RFC 9110 allows.
fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // The last n bytes.
        (true, false) => match number(last) {
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if size == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Range(size.saturating_sub(n), size - 1),
            None => Wanted::Whole,
        },
        (false, _) => {
            let Some(start) = number(first) else {
                return Wanted::Whole;
            };
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                number(last)
            };
            match end {
                None => Wanted::Whole,
                Some(end) if end < start => Wanted::Whole,
                Some(_) if start >= size => Wanted::Unsatisfiable,
                Some(end) => Wanted::Range(start, end.min(size - 1)),
            }
        }
        (true, true) => Wanted::Whole,
    }
}

pub struct FilesApi;

#[OpenApi(tag = "ApiTags::Files")]
impl FilesApi {
    /// Upload a file to push to agents (`file:push`): the request body is the file's bytes, at
    /// most the server's `file_max_mb`. Answers the file, named by its BLAKE3. 413 when it is
    /// too large.
    #[oai(path = "/api/files", method = "post", operation_id = "uploadFile")]
    async fn upload(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// A name to remember it by (no `/`).
        name: Query<Option<String>>,
        body: Binary<Body>,
    ) -> ApiResult<Uploaded> {
        let stream = Box::pin(body.0.into_bytes_stream());
        let blob = UploadFile { name: name.0 }
            .run(hub(&ctx)?, auth.caller(), stream)
            .await?;
        Ok(Uploaded::Created(Json(blob.into())))
    }

    /// The files the organisation holds (uploaded or pulled), newest first (`file:view`).
    #[oai(path = "/api/files", method = "get", operation_id = "listFiles")]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// At most this many (1 to 500, default 100).
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<FileView>>> {
        let limit = super::page_limit(limit.0, MAX_FILE_PAGE)?;
        let files = ListFiles { limit: Some(limit) }
            .run(hub(&ctx)?, auth.caller())
            .await?;
        Ok(Json(files.into_iter().map(Into::into).collect()))
    }

    /// Download a file the organisation holds (`file:pull`; audited). A `Range: bytes=…`
    /// header (one range) answers 206 with that part, so a cut download resumes.
    #[oai(
        path = "/api/files/:blake3",
        method = "get",
        operation_id = "downloadFile"
    )]
    async fn download(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        blake3: Path<String>,
        /// `bytes=start-end`, `bytes=start-` or `bytes=-suffix`.
        #[oai(name = "Range")]
        range: Header<Option<String>>,
    ) -> ApiResult<Download> {
        let opened = OpenFile { blake3: blake3.0 }
            .run(hub(&ctx)?, auth.caller())
            .await?;
        let size = opened.blob.size as u64;
        let etag = format!("\"{}\"", opened.blob.blake3);
        let mut file = tokio::fs::File::open(&opened.path)
            .await
            .map_err(|e| ApiError::unavailable(format!("the file cannot be read: {e}")))?;
        match wanted(range.0.as_deref(), size) {
            Wanted::Whole => {
                let name = opened
                    .blob
                    .name
                    .clone()
                    .unwrap_or_else(|| opened.blob.blake3.clone());
                Ok(Download::Whole(
                    Binary(Body::from_async_read(file)),
                    size,
                    "bytes".into(),
                    etag,
                    format!("attachment; filename=\"{}\"", name.replace('"', "_")),
                ))
            }
            Wanted::Range(start, end) => {
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| ApiError::unavailable(format!("the file cannot be read: {e}")))?;
                let len = end - start + 1;
                Ok(Download::Partial(
                    Binary(Body::from_async_read(file.take(len))),
                    len,
                    format!("bytes {start}-{end}/{size}"),
                    etag,
                ))
            }
            Wanted::Unsatisfiable => Ok(Download::Unsatisfiable(format!("bytes */{size}"))),
        }
    }

    /// Push a file the organisation holds to a path on an online agent (`file:push`). The
    /// agent writes it beside the path and renames it into place once its BLAKE3 verified; a
    /// cut transfer resumes. 400 for a path that is not absolute or contains `..`; 409 when the
    /// agent is offline, does not transfer files, or runs too many transfers.
    #[oai(
        path = "/api/agents/:id/files/push",
        method = "post",
        operation_id = "pushFile"
    )]
    async fn push(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<PushRequest>,
    ) -> ApiResult<TransferStarted> {
        let transfer = PushFile {
            agent_id: id.0,
            blake3: body.0.blake3,
            path: body.0.path,
        }
        .run(hub(&ctx)?, auth.caller())
        .await?;
        Ok(TransferStarted::Accepted(Json(transfer.into())))
    }

    /// Pull a regular file from an online agent to the server (`file:pull`); once complete the
    /// organisation holds it under its BLAKE3. Devices, FIFOs and files over the size cap are
    /// refused by the agent (the transfer fails, with why).
    #[oai(
        path = "/api/agents/:id/files/pull",
        method = "post",
        operation_id = "pullFile"
    )]
    async fn pull(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<PullRequest>,
    ) -> ApiResult<TransferStarted> {
        let transfer = PullFile {
            agent_id: id.0,
            path: body.0.path,
        }
        .run(hub(&ctx)?, auth.caller())
        .await?;
        Ok(TransferStarted::Accepted(Json(transfer.into())))
    }

    /// File transfers of the organisation (of one agent, with `agent_id`), newest first
    /// (`file:view`).
    #[oai(
        path = "/api/transfers",
        method = "get",
        operation_id = "listFileTransfers"
    )]
    async fn transfers(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        agent_id: Query<Option<Uuid>>,
        /// At most this many (1 to 500, default 100).
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<TransferView>>> {
        let limit = super::page_limit(limit.0, MAX_FILE_PAGE)?;
        let transfers = ListFileTransfers {
            agent_id: agent_id.0,
            limit: Some(limit),
        }
        .run(hub(&ctx)?, auth.caller())
        .await?;
        Ok(Json(transfers.into_iter().map(Into::into).collect()))
    }

    /// One file transfer (`file:view`).
    #[oai(
        path = "/api/transfers/:id",
        method = "get",
        operation_id = "getFileTransfer"
    )]
    async fn transfer(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<TransferView>> {
        let transfer = GetFileTransfer { transfer_id: id.0 }
            .run(hub(&ctx)?, auth.caller())
            .await?;
        Ok(Json(transfer.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(range: &str, size: u64, want: Wanted) {
        assert_eq!(wanted(Some(range), size), want, "{range} of {size}");
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_has_them() {
        check("bytes=0-99", 1000, Wanted::Range(0, 99));
        check("bytes=500-", 1000, Wanted::Range(500, 999));
        check("bytes=900-5000", 1000, Wanted::Range(900, 999));
        check("bytes=-100", 1000, Wanted::Range(900, 999));
        check("bytes=-5000", 1000, Wanted::Range(0, 999));
        check("bytes=1000-", 1000, Wanted::Unsatisfiable);
        check("bytes=-0", 1000, Wanted::Unsatisfiable);
        check("bytes=0-", 0, Wanted::Unsatisfiable);
        // Not one satisfiable byte range: the whole file.
        for whole in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=x-",
            "bytes=9-3",
            "bytes=-",
            "0-1",
        ] {
            check(whole, 1000, Wanted::Whole);
        }
        assert_eq!(wanted(None, 10), Wanted::Whole);
    }
}
