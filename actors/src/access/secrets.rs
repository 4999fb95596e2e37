//! The random secrets behind sessions, refresh tokens, MFA challenges and API keys, and their
//! hashes: only the hash is ever stored.

use crate::error::{DomainError, DomainResult};

/// Prefixes make leaked secrets recognisable (and greppable by secret scanners).
pub const ACCESS_PREFIX: &str = "r3a_";
pub const REFRESH_PREFIX: &str = "r3r_";
pub const API_KEY_PREFIX: &str = "r3k_";
pub const CHALLENGE_PREFIX: &str = "r3c_";

/// A fresh random secret: prefix + 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> DomainResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|_| DomainError::unavailable("the system random source failed"))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Secrets are 256-bit random, so a fast hash is enough; only the hash is stored.
pub fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hash_stably() {
        let a = new_secret(ACCESS_PREFIX).unwrap();
        let b = new_secret(ACCESS_PREFIX).unwrap();
        assert!(a.starts_with(ACCESS_PREFIX));
        assert_eq!(a.len(), ACCESS_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }
}
