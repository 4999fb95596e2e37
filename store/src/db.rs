//! Small helpers for moving values between Rust and the portable column types (TEXT uuids,
//! BIGINT booleans, TEXT json) that the Any driver can carry for both backends.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::error::{Result, StoreError};

pub(crate) fn get_str(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(crate) fn get_opt_str(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

pub(crate) fn get_i64(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn get_opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

/// Booleans are BIGINT 0/1 because the Any driver has no portable boolean column.
pub(crate) fn get_bool(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(get_i64(row, col)? != 0)
}

pub(crate) fn get_uuid(row: &AnyRow, col: &str) -> Result<Uuid> {
    parse_uuid(&get_str(row, col)?, col)
}

pub(crate) fn get_opt_uuid(row: &AnyRow, col: &str) -> Result<Option<Uuid>> {
    get_opt_str(row, col)?
        .map(|s| parse_uuid(&s, col))
        .transpose()
}

pub(crate) fn get_json<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T> {
    let text = get_str(row, col)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Invalid(format!("column {col} holds malformed json: {e}")))
}

pub(crate) fn parse_uuid(s: &str, col: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| StoreError::Invalid(format!("column {col} holds a bad uuid")))
}

pub(crate) fn bool_int(b: bool) -> i64 {
    i64::from(b)
}

/// Uuids are stored hyphenated lower-case, the form `Uuid`'s Display produces.
pub(crate) fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub(crate) fn to_json_text<T: serde::Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("{what} cannot be encoded as json: {e}")))
}

/// `$first, $first+1, ...` for `n` parameters, for IN lists and multi-row VALUES.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(placeholders(1, 3), "$1, $2, $3");
        assert_eq!(placeholders(4, 1), "$4");
        assert_eq!(placeholders(1, 0), "");
    }
}
