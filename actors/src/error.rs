//! The domain's one error type. Every operation fails with a [`DomainError`]; the API maps it to
//! HTTP in one place (`api/src/error.rs`) and the CLI prints it. Each variant carries a stable
//! machine-readable `code` where callers need more than the kind.

use reap3r_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The input is unusable (HTTP 400).
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    /// No valid credential (HTTP 401).
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// The caller may not do this (HTTP 403).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// No such thing in the caller's organisation (HTTP 404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the operation takes (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// Too many attempts (HTTP 429).
    #[error("{message}")]
    TooMany { code: &'static str, message: String },
    /// A part of the server failed; the request may be retried (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    /// `invalid_input`: a value the caller sent is unusable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            code: "invalid_input",
            message: message.into(),
            details: None,
        }
    }

    /// A 400 with its own code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden {
            code: "forbidden",
            message: message.into(),
        }
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            code,
            message: message.into(),
        }
    }

    pub fn too_many(code: &'static str, message: impl Into<String>) -> Self {
        Self::TooMany {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }

    /// A store error, with `NotFound` naming what was looked for.
    pub fn from_store(err: StoreError, what: &'static str) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound(what),
            other => Self::Store(other),
        }
    }
}

/// Trims a required text field and checks its length in characters.
pub fn required_text(field: &str, value: &str, max: usize) -> DomainResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(DomainError::invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(DomainError::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(value.to_owned())
}

/// Trims an optional text field; empty becomes `None`.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> DomainResult<Option<String>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => required_text(field, v, max).map(Some),
    }
}
