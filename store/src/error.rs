//! The store's single error type, and the mapping of driver errors onto it.

use serde::{Deserialize, Serialize};

/// Everything a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed. sqlx messages carry no connection secrets (URLs are never
    /// part of them), so the source is safe to log.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("not found")]
    NotFound,
    /// A unique constraint was hit (duplicate name, email, token hash...).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Token(TokenRefusal),
    /// The caller passed something unusable, or a stored value could not be decoded.
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// Why an enrolment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum TokenRefusal {
    #[error("enrolment token is unknown")]
    Unknown,
    #[error("enrolment token has expired")]
    Expired,
    #[error("enrolment token has been used up")]
    UsedUp,
    #[error("enrolment token has been revoked")]
    Revoked,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Turns a unique violation into `Conflict(what)` and a foreign-key violation into
/// `Invalid(missing)`; everything else stays a database error. Both SQLite and PostgreSQL report
/// these through `ErrorKind`, so one mapping serves both backends.
pub(crate) fn map_constraint(err: sqlx::Error, what: &str, missing: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return StoreError::Conflict(what.to_owned());
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return StoreError::Invalid(missing.to_owned());
            }
            _ => {}
        }
    }
    StoreError::Database(err)
}
