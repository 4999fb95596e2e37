//! The guard in front of every API route: body size cap, authentication (401), rate limits
//! (429: the credential's token bucket, or the client address's for requests without a valid
//! credential), the route table's permission check (403), JSON errors for whatever escapes the
//! handlers, security headers, and latency metrics. Handlers run only for requests that passed
//! it.

use std::sync::Mutex;
use std::time::Instant;

use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Request, Response};

use crate::auth::{self, Caller};
use crate::context::ApiContext;
use crate::error::{ApiError, into_json_response, json_response};
use crate::metrics::HttpMetrics;
use crate::rate_limit::{RateKey, RateLimiter, Verdict};
use crate::routes::{self, Access};

pub struct Guard<E> {
    inner: E,
    ctx: ApiContext,
    /// Every budget of this server (the core is pure; the lock is held for one check).
    limits: Mutex<RateLimiter>,
}

impl<E> Guard<E> {
    pub fn new(inner: E, ctx: ApiContext) -> Self {
        let limits = Mutex::new(RateLimiter::new(ctx.settings.rate));
        Self { inner, ctx, limits }
    }

    /// Spends one request of `key`'s budget, or refuses with 429 and `Retry-After`.
    fn limit(&self, key: RateKey) -> Result<(), ApiError> {
        let now = self.ctx.now_ms();
        let verdict = self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(key, now);
        match verdict {
            Verdict::Allow => Ok(()),
            Verdict::Limited { retry_after_s } => {
                self.ctx.metrics.rate_limited(key.kind());
                Err(ApiError::rate_limited(retry_after_s))
            }
        }
    }
}

/// The budget of a request without a valid credential: its client address.
fn address_key(req: &Request) -> RateKey {
    req.remote_addr()
        .as_socket_addr()
        .map_or(RateKey::Unknown, |a| RateKey::address(a.ip()))
}

/// The budget of an authenticated caller.
fn credential_key(caller: &Caller) -> Option<RateKey> {
    match &caller.credential {
        auth::Credential::Session { session_id } => Some(RateKey::Session(*session_id)),
        auth::Credential::ApiKey { key_id, .. } => Some(RateKey::ApiKey(*key_id)),
        auth::Credential::Cli => None,
    }
}

impl<E: Endpoint> Endpoint for Guard<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let mut resp = match self.admit(req).await {
            Ok(req) => match self.inner.call(req).await {
                Ok(out) => out.into_response(),
                Err(err) => into_json_response(err),
            },
            Err(err) => {
                // Refused credentials are counted here; failed logins where they are recorded
                // (handlers::auth), so no failure is counted twice.
                if err.status() == StatusCode::UNAUTHORIZED {
                    HttpMetrics::bump(&self.ctx.metrics.auth_failures);
                }
                err.into_response()
            }
        };
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            let allow = routes::methods_for(&path).join(", ");
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert("allow", v);
            }
        }
        set_security_headers(&mut resp, &path);
        self.ctx.metrics.observe(
            &method,
            routes::template(&method, &path),
            resp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        Ok(resp)
    }
}

impl<E> Guard<E> {
    /// Checks the request against the route table; returns it with the caller attached.
    async fn admit(&self, mut req: Request) -> Result<Request, ApiError> {
        let Some(route) = routes::lookup(req.method().as_str(), req.uri().path()) else {
            // Not an API route (docs, spec, metrics) or an unknown one: the router answers,
            // within the address's budget.
            self.limit(address_key(&req))?;
            return Ok(req);
        };
        if route.access == Access::Public {
            self.limit(address_key(&req))?;
        }
        if carries_body(req.method()) && !routes::streams_body(route) {
            cap_body(&mut req, self.ctx.settings.max_body_bytes).await?;
        }
        if route.access == Access::Public {
            return Ok(req);
        }
        // Browsers cannot set headers on a WebSocket: the sockets take the token in the query.
        let allow_query = matches!(route.path, "/api/ws" | "/api/shell/{id}/ws");
        let Some(secret) = auth::presented_credential(&req, allow_query) else {
            self.limit(address_key(&req))?;
            return Err(ApiError::unauthorized(
                "unauthenticated",
                "this operation needs a bearer token or an X-API-Key",
            ));
        };
        let caller: Caller = match auth::authenticate(&self.ctx, &req, &secret).await {
            Ok(caller) => caller,
            Err(err) => {
                // A refused credential spends the address's budget, so guessing is limited too.
                self.limit(address_key(&req))?;
                return Err(err);
            }
        };
        if let Some(key) = credential_key(&caller) {
            self.limit(key)?;
        }
        if let Access::Perm(p) = route.access {
            caller.require(p)?;
        }
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

fn carries_body(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Reads the body up to the cap (whatever Content-Length claims, chunked or not) and puts it back.
async fn cap_body(req: &mut Request, max: usize) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let bytes = req
        .take_body()
        .into_bytes_limit(max)
        .await
        .map_err(|_| too_large(max))?;
    req.set_body(Body::from_bytes(bytes));
    Ok(())
}

fn too_large(max: usize) -> ApiError {
    ApiError::PayloadTooLarge(poem_openapi::payload::Json(crate::error::ErrorBody {
        code: "payload_too_large".into(),
        message: format!("request bodies are limited to {max} bytes"),
        details: None,
    }))
}

fn set_security_headers(resp: &mut Response, path: &str) {
    let headers = resp.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if path.starts_with("/api/") {
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    }
}

/// The fallback for anything no route matched, in the common JSON shape.
pub fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}
