//! A real HTTP webhook receiver on a loopback port, for tests of anything that posts webhooks:
//! it records every request (method, path, headers, body), checks Reap3r's HMAC signature when
//! given the secret, answers with the status it is told to (200 by default), and can be stopped
//! and started again on the same port (a receiver that is down refuses connections).
//!
//! ```text
//! let hook = WebhookReceiver::start(Some(b"the-secret")).await?;
//! // ... create a webhook integration for hook.url("/hook") ...
//! let got = hook.wait_for(1, Duration::from_secs(10)).await?;
//! assert_eq!(got[0].signature_valid, Some(true));
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Largest request body recorded.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most header lines read.
const MAX_HEADERS: usize = 100;

/// One request the receiver got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether `X-Reap3r-Signature` verifies (`None` when the receiver has no secret).
    pub signature_valid: Option<bool>,
    /// The status it was answered with.
    pub status: u16,
}

impl ReceivedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| e.to_string())
    }
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(want) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&want).is_ok()
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Vec<ReceivedRequest>>,
    arrived: Notify,
    status: AtomicU16,
    /// A `Retry-After` (seconds) sent with failing answers; 0 for none.
    retry_after_s: AtomicU32,
    secret: Option<Vec<u8>>,
}

/// The receiver; stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(t) = task.take()
        {
            t.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // So the same port can be taken again at once after a stop.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

impl WebhookReceiver {
    /// Listens on a free port of 127.0.0.1; `secret` turns on signature checks.
    pub async fn start(secret: Option<&[u8]>) -> std::io::Result<WebhookReceiver> {
        let listener = bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let receiver = WebhookReceiver {
            addr,
            shared: Arc::new(Shared {
                requests: Mutex::new(Vec::new()),
                arrived: Notify::new(),
                status: AtomicU16::new(200),
                retry_after_s: AtomicU32::new(0),
                secret: secret.map(<[u8]>::to_vec),
            }),
            task: Mutex::new(None),
        };
        receiver.serve(listener);
        Ok(receiver)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                conns.spawn(async move {
                    let _ = connection(stream, &shared).await;
                });
            }
        });
        if let Ok(mut slot) = self.task.lock()
            && let Some(old) = slot.replace(task)
        {
            old.abort();
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answer every later request with `status` (e.g. 500 to make senders retry).
    pub fn answer_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Send `Retry-After: <seconds>` with every later failing answer (0: none), as a
    /// rate-limiting receiver does with 429.
    pub fn retry_after(&self, seconds: u32) {
        self.shared.retry_after_s.store(seconds, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused until [`WebhookReceiver::restart`].
    pub async fn stop(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let listener = bind(self.addr)?;
        self.serve(listener);
        Ok(())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` requests arrived (or `timeout` passed: an error).
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedRequest>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let got = self.requests();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(format!(
                    "{} of {n} requests within {timeout:?}",
                    self.requests().len()
                ));
            }
        }
    }
}

async fn connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for _ in 0..MAX_HEADERS {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    let status = shared.status.load(Ordering::SeqCst);
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let signature_valid = shared.secret.as_ref().map(|secret| {
        match (find("x-reap3r-timestamp"), find("x-reap3r-signature")) {
            (Some(ts), Some(sig)) => verify_signature(secret, &ts, &body, &sig),
            _ => false,
        }
    });
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push(ReceivedRequest {
            method,
            path,
            headers,
            body,
            signature_valid,
            status,
        });
    }
    shared.arrived.notify_waiters();
    let text = if (200..300).contains(&status) {
        "ok"
    } else {
        "receiver told to fail"
    };
    let retry_after = match shared.retry_after_s.load(Ordering::SeqCst) {
        0 => String::new(),
        _ if status < 300 => String::new(),
        s => format!("retry-after: {s}\r\n"),
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         {retry_after}connection: close\r\n\r\n{text}",
        if status < 300 { "OK" } else { "Error" },
        text.len()
    );
    write.write_all(response.as_bytes()).await?;
    write.shutdown().await
}
