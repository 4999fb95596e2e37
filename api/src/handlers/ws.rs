//! `GET /api/ws`: a WebSocket streaming fleet events as JSON text frames, filtered to the
//! caller's organisation and permissions. The session behind it is re-checked periodically, so
//! a revoked session loses its stream too.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use poem::web::Data;
use poem::web::websocket::{BoxWebSocketUpgraded, Message, WebSocket};
use poem_openapi::OpenApi;
use reap3r_actors::FleetEvent;
use tokio::sync::broadcast::error::RecvError;

use super::ApiTags;
use crate::auth::{Caller, WsAuth};
use crate::context::ApiContext;
use crate::error::ApiResult;
use crate::metrics::HttpMetrics;
use crate::rbac::Permission;

/// How often the stream re-checks that the caller's session is still valid.
const RECHECK: Duration = Duration::from_secs(15);

/// Whether the caller may see this event.
pub fn visible(caller: &Caller, event: &FleetEvent) -> bool {
    if event.org_id() != Some(caller.org_id) {
        return false;
    }
    match event {
        FleetEvent::Audit { .. } => caller.allows(Permission::AuditView),
        FleetEvent::JobUpdate { .. } | FleetEvent::JobOutput { .. } => {
            caller.allows(Permission::JobView)
        }
        FleetEvent::AlertFired { .. }
        | FleetEvent::AlertResolved { .. }
        | FleetEvent::AlertAcked { .. } => caller.allows(Permission::AlertEventList),
        FleetEvent::FileTransfer { .. } => caller.allows(Permission::FileView),
        _ => caller.allows(Permission::AgentList),
    }
}

/// Whether the caller's credential still holds (its login session, or its API key); a stream
/// checks it now and then.
pub(crate) async fn still_valid(ctx: &ApiContext, caller: &Caller) -> bool {
    reap3r_actors::access::credential_holds(&ctx.domain, caller, ctx.now_ms()).await
}

pub struct EventsApi;

#[OpenApi(tag = "ApiTags::Events")]
impl EventsApi {
    /// Live fleet events over a WebSocket.
    ///
    /// Authenticate with `Authorization: Bearer`, `X-API-Key`, or (browsers) an `access_token`
    /// query parameter. Each text frame is one JSON event with a `type` of `agent_enrolled`,
    /// `agent_online`, `agent_offline`, `audit`, `job_update`, `job_output`, `alert_fired`,
    /// `alert_resolved` or `alert_acked`, plus `lagged` when the client fell behind and
    /// missed events. See docs/EVENTS.md for the fields.
    #[oai(path = "/api/ws", method = "get", operation_id = "streamEvents")]
    async fn stream(
        &self,
        ctx: Data<&ApiContext>,
        auth: WsAuth,
        ws: WebSocket,
    ) -> ApiResult<BoxWebSocketUpgraded> {
        let ctx = ctx.0.clone();
        let caller = auth.caller().clone();
        let mut events = ctx.events.subscribe();
        Ok(ws.on_upgrade(move |socket| async move {
            HttpMetrics::bump(&ctx.metrics.ws_clients);
            let (mut sink, mut stream) = socket.split();
            let mut recheck = tokio::time::interval(RECHECK);
            recheck.tick().await;
            loop {
                tokio::select! {
                    event = events.recv() => {
                        let text = match event {
                            Ok(e) if visible(&caller, &e) => serde_json::to_string(&e).ok(),
                            Ok(_) => None,
                            Err(RecvError::Lagged(n)) => {
                                Some(serde_json::json!({ "type": "lagged", "missed": n }).to_string())
                            }
                            Err(RecvError::Closed) => break,
                        };
                        if let Some(text) = text
                            && sink.send(Message::Text(text)).await.is_err()
                        {
                            break;
                        }
                    }
                    incoming = stream.next() => match incoming {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        // Clients have nothing to say; pings are answered by the library.
                        Some(Ok(_)) => {}
                    },
                    _ = recheck.tick() => {
                        if !still_valid(&ctx, &caller).await {
                            let _ = sink.send(Message::Close(None)).await;
                            break;
                        }
                    }
                }
            }
            ctx.metrics
                .ws_clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        })
        .boxed())
    }
}
