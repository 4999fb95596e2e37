//! Password hashing with argon2id (PHC strings); plaintext never leaves this module.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be between {min} and {max} characters")]
    Length { min: usize, max: usize },
    #[error("could not hash password: {0}")]
    Hash(String),
}

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 256;

fn hasher() -> Argon2<'static> {
    // OWASP's second argon2id profile: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string after checking its length.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let len = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(PasswordError::Length {
            min: MIN_LEN,
            max: MAX_LEN,
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
    password.len() <= MAX_LEN * 4
        && hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
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
