//! The API's one error type and the one place errors become HTTP: every failure leaves as the
//! same JSON body (`code`, `message`, optional `details`) with its status.

use poem::Response;
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use reap3r_actors::DomainError;
use reap3r_store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Object, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_credentials`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Extra structured information, when there is any.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Every error an operation can answer with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or a value is invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid credential was presented.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The credential is valid but does not allow this.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource in the caller's organisation.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state (duplicate name, wrong state...).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body is larger than the server accepts.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Too many requests or attempts: the credential's (or, without one, the client address's)
    /// rate limit, or a login lockout. `Retry-After` says when to try again.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until a request would pass (rate limits; a lockout's end is not told).
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
    /// The server failed; the request may be retried.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        code: code.to_owned(),
        message: message.into(),
        details: None,
    })
}

impl ApiError {
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest(body(code, message))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_input", message)
    }
    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        ApiError::Unauthorized(body(code, message))
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(body("forbidden", message))
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(body("not_found", format!("{what} not found")))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Conflict(body("conflict", message))
    }
    pub fn too_many(code: &str, message: impl Into<String>) -> Self {
        ApiError::TooManyRequests(body(code, message), None)
    }
    /// Over the rate limit: 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(retry_after_s: u64) -> Self {
        ApiError::TooManyRequests(
            Json(ErrorBody {
                code: "rate_limited".to_owned(),
                message: format!("too many requests; try again in {retry_after_s} s"),
                details: Some(serde_json::json!({ "retry_after_s": retry_after_s })),
            }),
            Some(retry_after_s),
        )
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable(body("unavailable", message))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ApiError {
    pub fn body(&self) -> &ErrorBody {
        match self {
            ApiError::BadRequest(b)
            | ApiError::Unauthorized(b)
            | ApiError::Forbidden(b)
            | ApiError::NotFound(b)
            | ApiError::Conflict(b)
            | ApiError::PayloadTooLarge(b)
            | ApiError::UnsupportedMediaType(b)
            | ApiError::TooManyRequests(b, _)
            | ApiError::Unavailable(b) => &b.0,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.body();
        write!(f, "{} {}: {}", self.status().as_u16(), b.code, b.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Conflict(what) => ApiError::conflict(what),
            StoreError::Invalid(what) => ApiError::invalid(what),
            StoreError::Token(refusal) => {
                ApiError::bad_request("token_refused", refusal.to_string())
            }
            // A database failure is the server's problem, not the caller's; the detail goes to the
            // log, not to the client.
            other => {
                tracing::error!(error = %other, "store failure while serving a request");
                ApiError::unavailable("the database is unavailable; try again")
            }
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Invalid {
                code,
                message,
                details,
            } => ApiError::BadRequest(Json(ErrorBody {
                code: code.to_owned(),
                message,
                details,
            })),
            DomainError::Unauthenticated { code, message } => ApiError::unauthorized(code, message),
            DomainError::Forbidden { code, message } => ApiError::Forbidden(body(code, message)),
            DomainError::NotFound(what) => ApiError::not_found(what),
            DomainError::Conflict(message) => ApiError::conflict(message),
            DomainError::TooMany { code, message } => ApiError::too_many(code, message),
            DomainError::TooLarge(message) => {
                ApiError::PayloadTooLarge(body("payload_too_large", message))
            }
            DomainError::Unavailable(message) => {
                tracing::error!(%message, "a part of the server failed while serving a request");
                ApiError::unavailable(message)
            }
            DomainError::Store(err) => err.into(),
        }
    }
}

impl ApiError {
    /// A store error, with `NotFound` naming what was looked for.
    pub fn from_store(err: StoreError, what: &str) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found(what),
            other => other.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Turns any error that escaped the typed handlers (unparseable JSON, bad path or query values,
/// unknown routes, wrong methods, oversized bodies) into the same JSON body.
pub fn into_json_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        // Already one of ours (an `ApiError` turned into a poem error by poem-openapi).
        return err.into_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error while serving a request");
        "internal error".to_owned()
    } else {
        err.to_string()
    };
    json_response(status, code, &message)
}

pub fn json_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        code: code.to_owned(),
        message: message.to_owned(),
        details: None,
    };
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned());
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(text)
}
