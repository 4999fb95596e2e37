//! The HTTP channels: the generic webhook (JSON, signed) and the chat incoming webhooks.
//!
//! Signing: `X-Reap3r-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">` with the
//! integration's secret, `X-Reap3r-Timestamp` in Unix seconds, so a receiver can refuse a replay
//! outside its tolerance; `X-Reap3r-Notification-Id` carries the idempotency id (the same on
//! every attempt), so a receiver can drop duplicates. Redirects are not followed (a redirect
//! could point anywhere, past the SSRF check).

use hmac::{Hmac, KeyInit, Mac};
use reap3r_store::Uuid;
use sha2::Sha256;

use super::render::{render_chat, render_webhook};
use super::{ATTEMPT_TIMEOUT, Channel, NotifySettings, SendReport, clip};
use crate::notify::NotificationMessage;
use crate::notify::ssrf::{GuardedResolver, Lookup, check_url};

pub const TIMESTAMP_HEADER: &str = "X-Reap3r-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Reap3r-Signature";
pub const IDEMPOTENCY_HEADER: &str = "X-Reap3r-Notification-Id";

/// How much of a response body is read into the answer.
const BODY_PREVIEW: usize = 200;

pub(super) fn client(
    settings: NotifySettings,
    lookup: std::sync::Arc<dyn Lookup>,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("reap3r-notifier/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(std::sync::Arc::new(GuardedResolver {
            allow_loopback: settings.allow_loopback,
            lookup,
        }))
        .build()
        .map_err(|e| format!("cannot build the notification HTTP client: {e}"))
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(super) async fn send_webhook(
    http: &reqwest::Client,
    channel: &Channel,
    message: &NotificationMessage,
    id: Uuid,
    now_ms: i64,
    settings: NotifySettings,
) -> SendReport {
    let Some(url) = channel.config.url.as_deref() else {
        return SendReport::refused("webhook has no url");
    };
    let Some(secret) = channel.secrets.webhook_secret.as_deref() else {
        return SendReport::refused("webhook has no signing secret");
    };
    let body = match serde_json::to_vec(&render_webhook(message, id, now_ms)) {
        Ok(b) => b,
        Err(e) => return SendReport::refused(format!("cannot encode the message: {e}")),
    };
    let timestamp = now_ms.div_euclid(1000);
    let signature = sign(secret.as_bytes(), timestamp, &body);
    post(
        http,
        url,
        body,
        &[
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, signature),
        ],
        id,
        settings,
    )
    .await
}

pub(super) async fn send_chat(
    http: &reqwest::Client,
    channel: &Channel,
    message: &NotificationMessage,
    id: Uuid,
    settings: NotifySettings,
) -> SendReport {
    let Some(url) = channel.secrets.hook_url.as_deref() else {
        return SendReport::refused("integration has no incoming-webhook url");
    };
    let body = match serde_json::to_vec(&render_chat(channel.kind, message)) {
        Ok(b) => b,
        Err(e) => return SendReport::refused(format!("cannot encode the message: {e}")),
    };
    post(http, url, body, &[], id, settings).await
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
    id: Uuid,
    settings: NotifySettings,
) -> SendReport {
    // Checked again at send time: the setting may have changed since the integration was saved,
    // and the resolver checks the addresses a name resolves to now.
    let url = match check_url(url, settings.allow_loopback) {
        Ok(u) => u,
        Err(e) => return SendReport::refused(e),
    };
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, id.to_string())
        .header("Idempotency-Key", id.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            let retry_after_ms = retry_after_ms(response.headers());
            let preview = match response.bytes().await {
                Ok(b) => String::from_utf8_lossy(&b[..b.len().min(BODY_PREVIEW)]).into_owned(),
                Err(_) => String::new(),
            };
            let mut answer = format!("HTTP {status}");
            if !preview.trim().is_empty() {
                answer.push_str(": ");
                answer.push_str(preview.trim());
            }
            SendReport {
                delivered: status.is_success(),
                answer: clip(answer),
                retry_after_ms: retry_after_ms.filter(|_| !status.is_success()),
            }
        }
        Err(e) => SendReport::refused(describe(&e)),
    }
}

/// `Retry-After` in its delta-seconds form, in ms; the HTTP-date form (rare from webhook and
/// chat services, which send seconds) is ignored and the ordinary backoff applies.
fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    let seconds: i64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds >= 0).then(|| seconds.saturating_mul(1000))
}

/// A reqwest error with its causes (the top level alone says only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    // The URL may be a chat hook URL, which is a secret.
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // Computed independently:
        // printf '%s' '1700000000.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", 1_700_000_000, b"{}"),
            "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(
            sign(b"other", 1_700_000_000, b"{}"),
            sign(b"secret", 1_700_000_000, b"{}")
        );
        assert_ne!(
            sign(b"secret", 1_700_000_001, b"{}"),
            sign(b"secret", 1_700_000_000, b"{}")
        );
    }
}
