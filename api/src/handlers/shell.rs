//! Remote shells: open one on an agent, drive it over a WebSocket, list sessions, download
//! their recordings. The operations are the domain's (`reap3r_actors::shell`).
//!
//! The WebSocket (`GET /api/shell/{id}/ws`) speaks both to browsers (xterm.js) and scripts:
//! binary frames are terminal bytes (keystrokes in, output out); text frames are JSON
//! control messages — in: `{"type":"input","data":"…"}`, `{"type":"resize","cols":…,"rows":…}`,
//! `{"type":"close"}`; out: `started` (`pid`), `agent_lost`, `resumed`, `superseded`, `ended`
//! (`exit_code`, `reason`) and `error` (`message`). A `close` message or a close frame ends the
//! session (after a close frame nothing more can be sent: the socket is closed once the end is
//! recorded); a socket that drops without either can attach again within the reattach grace.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use poem::web::Data;
use poem::web::websocket::{BoxWebSocketUpgraded, Message, WebSocket, WebSocketConfig};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use reap3r_actors::shell::{
    AttachShell, GetShellSession, ListShellSessions, OpenShell, ReadShellRecording, ShellEvent,
    ShellHub, ShellKeys,
};
use reap3r_store::{MAX_SHELL_PAGE, ShellSession, ShellStatus, Uuid};
use serde::Deserialize;
use serde_json::json;

use super::ApiTags;
use super::ws::still_valid;
use crate::auth::{Auth, WsAuth};
use crate::context::ApiContext;
use crate::error::{ApiError, ApiResult};

/// Largest message a shell socket accepts from its client (a big paste).
pub const MAX_SHELL_MESSAGE_BYTES: usize = 64 * 1024;
/// How often a shell socket re-checks that the caller's session is still valid.
const RECHECK: Duration = Duration::from_secs(15);

fn hub(ctx: &ApiContext) -> ApiResult<&ShellHub> {
    ctx.shells
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("remote shells are not running"))
}

/// The terminal's size when the shell starts; 80 × 24 when left out.
#[derive(Debug, Object)]
pub struct OpenShellRequest {
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub cols: Option<u16>,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub rows: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ShellStatusView {
    Pending,
    Active,
    Ended,
}

/// A shell session. `status`: `pending` until the socket attaches and the agent starts the
/// shell, then `active`, then `ended`.
#[derive(Debug, Object)]
pub struct ShellSessionView {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub user_id: Option<Uuid>,
    /// The operator as the audit log names them.
    pub operator: String,
    pub status: ShellStatusView,
    pub cols: i64,
    pub rows: i64,
    pub created_at: i64,
    /// The socket must attach before this (unix ms).
    pub expires_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub exit_code: Option<i64>,
    /// Keystroke bytes sent to the shell.
    pub bytes_in: i64,
    /// Output bytes the shell wrote.
    pub bytes_out: i64,
    /// The recording's size, uncompressed and as stored (gzip).
    pub recording_bytes: i64,
    pub recording_stored_bytes: i64,
    /// Where to attach: `GET` this path as a WebSocket.
    pub ws_path: String,
}

impl From<ShellSession> for ShellSessionView {
    fn from(s: ShellSession) -> Self {
        Self {
            ws_path: format!("/api/shell/{}/ws", s.id),
            id: s.id,
            agent_id: s.agent_id,
            user_id: s.user_id,
            operator: s.operator,
            status: match s.status {
                ShellStatus::Pending => ShellStatusView::Pending,
                ShellStatus::Active => ShellStatusView::Active,
                ShellStatus::Ended => ShellStatusView::Ended,
            },
            cols: s.cols,
            rows: s.rows,
            created_at: s.created_at,
            expires_at: s.expires_at,
            started_at: s.started_at,
            ended_at: s.ended_at,
            end_reason: s.end_reason,
            exit_code: s.exit_code,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            recording_bytes: s.recording_bytes,
            recording_stored_bytes: s.recording_stored,
        }
    }
}

#[derive(Debug, ApiResponse)]
pub enum OpenedShell {
    /// The session is granted; attach to `ws_path` before `expires_at`.
    #[oai(status = 201)]
    Created(Json<ShellSessionView>),
}

#[derive(Debug, ApiResponse)]
pub enum RecordingDownload {
    /// The recording: asciicast v2, gzip-compressed (`shell-<id>.cast.gz`; `asciinema play`
    /// reads it unpacked). Sent as `application/octet-stream`, which every client generator
    /// reads as bytes.
    #[oai(status = 200, content_type = "application/octet-stream")]
    Ok(
        Binary<Vec<u8>>,
        #[oai(header = "Content-Disposition")] String,
    ),
}

/// A control message from the socket's client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Input { data: String },
    Resize { cols: u16, rows: u16 },
    Close,
}

fn event_frame(event: ShellEvent) -> Message {
    match event {
        ShellEvent::Output(bytes) => Message::Binary(bytes),
        ShellEvent::Started { pid } => {
            Message::Text(json!({"type": "started", "pid": pid}).to_string())
        }
        ShellEvent::AgentLost => Message::Text(json!({"type": "agent_lost"}).to_string()),
        ShellEvent::Resumed => Message::Text(json!({"type": "resumed"}).to_string()),
        ShellEvent::Superseded => Message::Text(json!({"type": "superseded"}).to_string()),
        ShellEvent::Ended { exit_code, reason } => Message::Text(
            json!({"type": "ended", "exit_code": exit_code, "reason": reason}).to_string(),
        ),
    }
}

/// What a client frame asks for; `Err` is the error to send back (the frame is ignored).
fn client_keys(message: Message) -> Result<Option<ShellKeys>, String> {
    let too_big = |n: usize| {
        Err(format!(
            "messages are at most {MAX_SHELL_MESSAGE_BYTES} bytes, this one is {n}"
        ))
    };
    match message {
        Message::Binary(bytes) if bytes.len() > MAX_SHELL_MESSAGE_BYTES => too_big(bytes.len()),
        Message::Binary(bytes) => Ok(Some(ShellKeys::Input(bytes))),
        Message::Text(text) if text.len() > MAX_SHELL_MESSAGE_BYTES => too_big(text.len()),
        Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Input { data }) => Ok(Some(ShellKeys::Input(data.into_bytes()))),
            Ok(ClientMessage::Resize { cols, rows }) => {
                if !(reap3r_wire::ShellResize { cols, rows }).is_valid() {
                    return Err(reap3r_wire::ShellResize::OUT_OF_RANGE.into());
                }
                Ok(Some(ShellKeys::Resize { cols, rows }))
            }
            Ok(ClientMessage::Close) => Ok(Some(ShellKeys::Close)),
            Err(err) => Err(format!(
                "text frames are JSON control messages (input, resize, close): {err}"
            )),
        },
        // Pings are answered by the library; close frames are handled by the caller.
        _ => Ok(None),
    }
}

pub struct ShellApi;

#[OpenApi(tag = "ApiTags::Shell")]
impl ShellApi {
    /// Open a remote shell on an online agent (`shell:open`; users with MFA need a step-up in
    /// the last 5 minutes, `POST /api/auth/step-up`, else 403 `step_up_required`). Answers the
    /// session; attach to its `ws_path` as a WebSocket before `expires_at` to start the shell.
    /// 409 when the agent is offline, does not run shells, or a limit per agent or operator
    /// is reached.
    #[oai(
        path = "/api/agents/:id/shell",
        method = "post",
        operation_id = "openShell"
    )]
    async fn open(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<Option<OpenShellRequest>>,
    ) -> ApiResult<OpenedShell> {
        let body = body.0;
        let session = OpenShell {
            agent_id: id.0,
            cols: body.as_ref().and_then(|b| b.cols).unwrap_or(80),
            rows: body.as_ref().and_then(|b| b.rows).unwrap_or(24),
        }
        .run(hub(&ctx)?, auth.caller())
        .await?;
        Ok(OpenedShell::Created(Json(session.into())))
    }

    /// Attach to a shell session you opened, as a WebSocket (authenticated like `/api/ws`,
    /// browsers may pass `access_token` as a query parameter). Binary frames carry terminal
    /// bytes both ways; text frames carry JSON control messages (see the API guide). A close
    /// frame ends the session; a dropped socket may attach again within the reattach grace.
    #[oai(
        path = "/api/shell/:id/ws",
        method = "get",
        operation_id = "attachShell"
    )]
    async fn attach(
        &self,
        ctx: Data<&ApiContext>,
        auth: WsAuth,
        id: Path<Uuid>,
        ws: WebSocket,
    ) -> ApiResult<BoxWebSocketUpgraded> {
        let caller = auth.caller().clone();
        let mut attachment = AttachShell { session_id: id.0 }
            .run(hub(&ctx)?, &caller)
            .await?;
        let ctx = ctx.0.clone();
        // Larger messages fail the socket before they are buffered (a bit of slack over the
        // cap, so an over-cap message is answered with an error rather than a dropped socket).
        let limits = WebSocketConfig::default()
            .max_message_size(Some(4 * MAX_SHELL_MESSAGE_BYTES))
            .max_frame_size(Some(4 * MAX_SHELL_MESSAGE_BYTES));
        Ok(ws
            .config(limits)
            .on_upgrade(move |socket| async move {
                let (mut sink, mut stream) = socket.split();
                let mut recheck = tokio::time::interval(RECHECK);
                recheck.tick().await;
                loop {
                    tokio::select! {
                        event = attachment.events.recv() => {
                            let Some(event) = event else { break };
                            let last = matches!(event, ShellEvent::Ended { .. } | ShellEvent::Superseded);
                            if sink.send(event_frame(event)).await.is_err() || last {
                                break;
                            }
                        }
                        incoming = stream.next() => match incoming {
                            Some(Ok(Message::Close(_))) => {
                                // The session ends; once its end is recorded the close is
                                // answered (nothing may follow a close frame, so the client
                                // reads the outcome from the API, or sends `close` as JSON
                                // to get an `ended` message first).
                                let _ = attachment.keys.send(ShellKeys::Close).await;
                                while let Some(event) = attachment.events.recv().await {
                                    if let ShellEvent::Ended { .. } = event {
                                        break;
                                    }
                                }
                                let _ = sink.close().await;
                                break;
                            }
                            // Dropped without a close: the session waits for a reattach.
                            None | Some(Err(_)) => break,
                            Some(Ok(message)) => match client_keys(message) {
                                Ok(Some(keys)) => {
                                    if attachment.keys.send(keys).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(None) => {}
                                Err(message) => {
                                    let error = json!({"type": "error", "message": message});
                                    if sink.send(Message::Text(error.to_string())).await.is_err() {
                                        break;
                                    }
                                }
                            },
                        },
                        _ = recheck.tick() => {
                            if !still_valid(&ctx, &caller).await {
                                let _ = attachment.keys.send(ShellKeys::Close).await;
                                let _ = sink.send(Message::Close(None)).await;
                                break;
                            }
                        }
                    }
                }
            })
            .boxed())
    }

    /// Shell sessions of the organisation (of one agent, with `agent_id`), newest first
    /// (`shell:view`).
    #[oai(
        path = "/api/shell/sessions",
        method = "get",
        operation_id = "listShellSessions"
    )]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        agent_id: Query<Option<Uuid>>,
        /// At most this many (1 to 500, default 100).
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<ShellSessionView>>> {
        let limit = super::page_limit(limit.0, MAX_SHELL_PAGE)?;
        let sessions = ListShellSessions {
            agent_id: agent_id.0,
            limit: Some(limit),
        }
        .run(hub(&ctx)?, auth.caller())
        .await?;
        Ok(Json(sessions.into_iter().map(Into::into).collect()))
    }

    /// One shell session (`shell:view`).
    #[oai(
        path = "/api/shell/sessions/:id",
        method = "get",
        operation_id = "getShellSession"
    )]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<ShellSessionView>> {
        let session = GetShellSession { session_id: id.0 }
            .run(hub(&ctx)?, auth.caller())
            .await?;
        Ok(Json(session.into()))
    }

    /// Download a session's recording for playback (`shell:view`; audited): asciicast v2,
    /// gzip-compressed. 404 when nothing was recorded (or the recording passed retention).
    #[oai(
        path = "/api/shell/sessions/:id/recording",
        method = "get",
        operation_id = "downloadShellRecording"
    )]
    async fn recording(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<RecordingDownload> {
        let file = ReadShellRecording { session_id: id.0 }
            .run(hub(&ctx)?, auth.caller())
            .await?;
        Ok(RecordingDownload::Ok(
            Binary(file.gzip),
            format!("attachment; filename=\"shell-{}.cast.gz\"", file.session.id),
        ))
    }
}
