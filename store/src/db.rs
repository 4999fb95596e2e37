//! Small helpers for moving values between Rust and the portable column types (TEXT uuids,
//! BIGINT booleans, TEXT json) that the Any driver can carry for both backends.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
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

/// `n` rows of a multi-row VALUES list, one column per entry of `types`, numbered from
/// `$first`: `(CAST($1 AS TEXT), CAST($2 AS BIGINT)), (CAST($3 AS TEXT), ...)`. The casts give
/// PostgreSQL each column's type (a NULL parameter alone says nothing); SQLite accepts them.
pub(crate) fn values_rows(first: usize, n: usize, types: &[&str]) -> String {
    let mut sql = String::with_capacity(n * types.len() * 24);
    let mut p = first;
    for row in 0..n {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (col, ty) in types.iter().enumerate() {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("CAST(${p} AS {ty})"));
            p += 1;
        }
        sql.push(')');
    }
    sql
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern and wraps the text in `%` so it
/// matches as a substring.
pub(crate) fn like_substring(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A value bound to a statement whose WHERE clause is assembled at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Text(String),
    Int(i64),
}

/// A WHERE clause assembled from optional filters. The clauses are constant SQL from this crate
/// with `$n` placeholders; every caller-supplied value is added as a bind parameter and never
/// formatted into the text, which is what makes wrapping the result in `AssertSqlSafe` sound.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Adds a text bind parameter and returns its placeholder.
    pub(crate) fn text(&mut self, value: impl Into<String>) -> String {
        self.args.push(Arg::Text(value.into()));
        format!("${}", self.args.len())
    }

    /// Adds an integer bind parameter and returns its placeholder.
    pub(crate) fn int(&mut self, value: i64) -> String {
        self.args.push(Arg::Int(value));
        format!("${}", self.args.len())
    }

    /// Adds a condition; it must only contain constant SQL and placeholders from this builder.
    pub(crate) fn and(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// `" WHERE a AND b"`, or nothing when there are no conditions.
    pub(crate) fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// Binds the collected parameters, in placeholder order.
    pub(crate) fn bind<'q>(
        self,
        mut query: Query<'q, Any, AnyArguments>,
    ) -> Query<'q, Any, AnyArguments> {
        for arg in self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s),
                Arg::Int(i) => query.bind(i),
            };
        }
        query
    }
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

    #[test]
    fn values_rows_are_numbered_and_cast() {
        assert_eq!(
            values_rows(2, 2, &["TEXT", "BIGINT"]),
            "(CAST($2 AS TEXT), CAST($3 AS BIGINT)), (CAST($4 AS TEXT), CAST($5 AS BIGINT))"
        );
        assert_eq!(values_rows(1, 1, &["TEXT"]), "(CAST($1 AS TEXT))");
        assert_eq!(values_rows(1, 0, &["TEXT"]), "");
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_substring("web"), "%web%");
        assert_eq!(like_substring("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn conditions_number_their_parameters() {
        let mut c = Conditions::default();
        check_where(&c, "");
        let a = c.text("x");
        c.and(format!("a = {a}"));
        let b = c.int(5);
        c.and(format!("(b > {b} OR b IS NULL)"));
        check_where(&c, " WHERE a = $1 AND (b > $2 OR b IS NULL)");
        assert_eq!(c.args, vec![Arg::Text("x".into()), Arg::Int(5)]);
    }

    fn check_where(c: &Conditions, want: &str) {
        assert_eq!(c.where_sql(), want);
    }
}
