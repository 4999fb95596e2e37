//! What a secret is to the domain: its kinds, the limits of every field (one constant each;
//! the API schema states the same numbers), the view lists and reads return (never a value),
//! and the validation of input.

use reap3r_store::{GrantFlags, SecretRow, Uuid};
use zeroize::Zeroizing;

use crate::error::{DomainError, DomainResult, optional_text, required_text};

/// Largest secret value, in bytes (a certificate chain or an SSH key fits).
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;
/// Longest secret name, in characters.
pub const MAX_SECRET_NAME_CHARS: usize = 200;
/// Longest notes, in characters.
pub const MAX_SECRET_NOTES_CHARS: usize = 4000;
/// Most tags on a secret, and the longest tag in characters.
pub const MAX_SECRET_TAGS: usize = 32;
pub const MAX_SECRET_TAG_CHARS: usize = 64;
/// Longest reason given for a reveal or a use, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Most grants on one secret.
pub const MAX_GRANTS_PER_SECRET: usize = 100;
/// How long a step-up (an MFA code proved again) lets its session reveal secrets.
pub const STEP_UP_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Default page of a secret list.
pub const DEFAULT_SECRET_PAGE: i64 = 50;
/// How far ahead "expiring soon" looks by default, in days.
pub const DEFAULT_EXPIRING_DAYS: i64 = 30;
/// Longest "expiring within" asked for, in days.
pub const MAX_EXPIRING_DAYS: i64 = 3650;

macro_rules! secret_kinds {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// The kinds of secret.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SecretKind { $($variant),+ }

        impl SecretKind {
            pub const ALL: &'static [SecretKind] = &[$(SecretKind::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(SecretKind::$variant => $name),+ }
            }
        }

        impl std::str::FromStr for SecretKind {
            type Err = DomainError;
            fn from_str(s: &str) -> DomainResult<Self> {
                match s {
                    $($name => Ok(SecretKind::$variant),)+
                    other => Err(DomainError::invalid(format!("kind: unknown kind {other:?}"))),
                }
            }
        }
    };
}

secret_kinds! {
    Password => "password",
    ApiToken => "api_token",
    SshKey => "ssh_key",
    Certificate => "certificate",
    Note => "note",
    KeyValue => "key_value",
}

/// A secret as callers see it: metadata and what the caller may do, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretView {
    pub row: SecretRow,
    pub access: GrantFlags,
    /// Whether the caller may share, unshare and delete it (its owner, or an org admin).
    pub manage: bool,
}

/// A value being stored; zeroed when dropped.
pub type SecretValue = Zeroizing<String>;

/// Checks a value for its kind: size, not empty, a JSON object of strings for key/value.
pub fn check_value(kind: SecretKind, value: &str) -> DomainResult<()> {
    if value.is_empty() {
        return Err(DomainError::invalid("value: must not be empty"));
    }
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(DomainError::invalid(format!(
            "value: longer than {MAX_SECRET_VALUE_BYTES} bytes"
        )));
    }
    if kind == SecretKind::KeyValue {
        // The error never quotes the value.
        let parsed: Result<std::collections::BTreeMap<String, String>, _> =
            serde_json::from_str(value);
        if parsed.is_err() {
            return Err(DomainError::invalid(
                "value: a key_value secret is a JSON object of strings",
            ));
        }
    }
    Ok(())
}

pub fn check_name(name: &str) -> DomainResult<String> {
    required_text("name", name, MAX_SECRET_NAME_CHARS)
}

pub fn check_notes(notes: Option<String>) -> DomainResult<Option<String>> {
    optional_text("notes", notes.as_deref(), MAX_SECRET_NOTES_CHARS)
}

pub fn check_tags(tags: Vec<String>) -> DomainResult<Vec<String>> {
    if tags.len() > MAX_SECRET_TAGS {
        return Err(DomainError::invalid(format!(
            "tags: more than {MAX_SECRET_TAGS}"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim().to_owned();
        if tag.is_empty() || tag.chars().count() > MAX_SECRET_TAG_CHARS {
            return Err(DomainError::invalid(format!(
                "tags: each is 1 to {MAX_SECRET_TAG_CHARS} characters"
            )));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// A reason is required for a reveal (it goes into the access log).
pub fn check_reason(reason: &str) -> DomainResult<String> {
    required_text("reason", reason, MAX_REASON_CHARS)
}

pub fn secret_target(id: Uuid) -> String {
    format!("secret:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_for_their_kind_without_being_quoted() {
        assert!(check_value(SecretKind::Password, "hunter2").is_ok());
        assert!(check_value(SecretKind::Password, "").is_err());
        let big = "x".repeat(MAX_SECRET_VALUE_BYTES + 1);
        assert!(check_value(SecretKind::Note, &big).is_err());
        assert!(check_value(SecretKind::KeyValue, r#"{"user":"a","pass":"b"}"#).is_ok());
        let err = check_value(SecretKind::KeyValue, "not json s3cr3t").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
        assert!("password".parse::<SecretKind>().is_ok());
        assert!("passwd".parse::<SecretKind>().is_err());
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_capped() {
        assert_eq!(
            check_tags(vec![" a ".into(), "a".into(), "b".into()]).unwrap(),
            ["a", "b"]
        );
        assert!(check_tags(vec![String::new()]).is_err());
        assert!(check_tags((0..=MAX_SECRET_TAGS).map(|i| i.to_string()).collect()).is_err());
    }
}
