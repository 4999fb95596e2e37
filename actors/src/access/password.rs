//! Password hashing with argon2id (PHC strings); plaintext never leaves this module. Argon2 is
//! deliberately slow, so operations hash and verify off the async workers.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{DomainError, DomainResult};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be between {min} and {max} characters")]
    Length { min: usize, max: usize },
    #[error("could not hash password: {0}")]
    Hash(String),
}

/// Shortest password accepted, in characters (the API schema says the same number).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in characters (the API schema says the same number).
pub const MAX_PASSWORD_CHARS: usize = 256;

fn hasher() -> Argon2<'static> {
    // OWASP's second argon2id profile: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string after checking its length.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let len = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&len) {
        return Err(PasswordError::Length {
            min: MIN_PASSWORD_CHARS,
            max: MAX_PASSWORD_CHARS,
        });
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    password.len() <= MAX_PASSWORD_CHARS * 4
        && hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
}

/// [`hash_password`] on a blocking thread; a bad length is `invalid_input`.
pub async fn hash_off_thread(password: String) -> DomainResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| DomainError::unavailable("password hashing failed"))?
        .map_err(|e| match e {
            PasswordError::Length { .. } => DomainError::invalid(e.to_string()),
            PasswordError::Hash(_) => DomainError::unavailable(e.to_string()),
        })
}

/// [`verify_password`] on a blocking thread.
pub async fn verify_off_thread(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// A valid hash of nothing anyone knows, verified against for unknown emails so the answer takes
/// as long as for a wrong password.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy-password-never-matches").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_reject() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("anything", "not a phc string"));
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::Length { .. })
        ));
    }
}
