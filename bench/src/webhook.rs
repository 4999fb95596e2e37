//! The alerting scenario's notification receiver: a real HTTP server (poem, on loopback) that
//! takes the server's signed webhooks, stamps each with its arrival time, checks its
//! `X-Reap3r-Signature` (HMAC-SHA256 over `<timestamp>.<body>`, recomputed with the notifier's
//! own `sign`: the check here is that every delivery arrived whole and signed; the e2e tests
//! verify the scheme with an independent implementation) and answers 200. Arrival times are wall-clock ms, the clock the simulated
//! agents stamp their samples with, so "sample taken → notification received" is one clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Request, Response, Server, endpoint::make};
use reap3r_actors::notify::channels::{
    IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign,
};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::sim::now_ms;

/// The largest body kept (a grouped message lists at most 20 alerts, a few KiB).
const MAX_BODY_BYTES: usize = 1 << 20;

/// One webhook as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub received_ms: u64,
    pub signature_valid: bool,
    pub notification_id: Option<String>,
    pub body: Value,
}

#[derive(Debug, Default)]
struct State {
    deliveries: Mutex<Vec<Delivery>>,
}

impl State {
    fn deliveries(&self) -> std::sync::MutexGuard<'_, Vec<Delivery>> {
        // Poisoned only if a handler panicked mid-push; the list is still a list.
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn signed(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    timestamp
        .parse::<i64>()
        .is_ok_and(|t| sign(secret, t, body) == signature)
}

impl Receiver {
    /// Listens on a free loopback port; webhooks are checked against `secret`.
    pub async fn start(secret: Vec<u8>) -> Result<Self> {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .context("binding the webhook receiver")?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the webhook receiver has no address")?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let secret = Arc::new(secret);
        let app = make(move |req: Request| {
            let (st, secret) = (st.clone(), secret.clone());
            async move {
                let received_ms = now_ms();
                let header = |name: &str| req.header(name).map(str::to_string);
                let (timestamp, signature) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
                let notification_id = header(IDEMPOTENCY_HEADER);
                let Ok(bytes) = req.into_body().into_bytes_limit(MAX_BODY_BYTES).await else {
                    return Response::builder()
                        .status(poem::http::StatusCode::BAD_REQUEST)
                        .finish();
                };
                let signature_valid = match (timestamp, signature) {
                    (Some(t), Some(s)) => signed(&secret, &t, &bytes, &s),
                    _ => false,
                };
                st.deliveries().push(Delivery {
                    received_ms,
                    signature_valid,
                    notification_id,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                });
                Response::builder()
                    .status(poem::http::StatusCode::OK)
                    .finish()
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        let _ = stopped.await;
                    },
                    Some(std::time::Duration::from_secs(2)),
                )
                .await;
        });
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries().clone()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
