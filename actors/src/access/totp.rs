//! TOTP (RFC 6238, SHA-1, 6 digits, 30 s) for operator MFA. Time is passed in; which time step a
//! code matched is returned so the caller can make each step single-use.

use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::error::{DomainError, DomainResult};

const DIGITS: u8 = 6;
const STEP_S: u64 = 30;
/// One step either side, for phones whose clocks drift a little.
const SKEW: u16 = 1;

fn totp(secret_base32: &str, account: &str, issuer: &str) -> DomainResult<Totp> {
    let secret = Secret::try_from_base32(secret_base32)
        .map_err(|_| DomainError::conflict("stored MFA secret is unreadable; reset MFA"))?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW)
        .with_step_duration(STEP_S)
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some(issuer))
        .build()
        .map_err(|e| DomainError::invalid(format!("cannot set up MFA for this account: {e}")))
}

/// A new random 160-bit secret, base32.
pub fn new_secret() -> DomainResult<String> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)
        .map_err(|_| DomainError::unavailable("the system random source failed"))?;
    Ok(Secret::from(bytes.to_vec()).to_base32())
}

/// The `otpauth://` URL authenticator apps import.
pub fn otpauth_url(secret_base32: &str, account: &str, issuer: &str) -> DomainResult<String> {
    totp(secret_base32, account, issuer)?
        .to_url()
        .map_err(|e| DomainError::invalid(format!("cannot build the otpauth URL: {e}")))
}

/// The time step the code is valid for at `now_ms`, if it is valid.
pub fn matching_step(secret_base32: &str, code: &str, now_ms: i64) -> DomainResult<Option<i64>> {
    let code = code.trim();
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
    let t = totp(secret_base32, "user", "Reap3r")?;
    Ok(t.check(code, now_s).and_then(|s| i64::try_from(s).ok()))
}

/// The current code, for tests and tools.
pub fn code_at(secret_base32: &str, now_ms: i64) -> DomainResult<String> {
    let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
    Ok(totp(secret_base32, "user", "Reap3r")?
        .generate(now_s)
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn codes_match_their_step_with_one_step_of_skew() {
        let secret = new_secret().unwrap();
        let code = code_at(&secret, T).unwrap();
        let step = T / 1000 / 30;
        assert_eq!(matching_step(&secret, &code, T).unwrap(), Some(step));
        assert_eq!(
            matching_step(&secret, &code, T + 30_000).unwrap(),
            Some(step)
        );
        assert_eq!(matching_step(&secret, &code, T + 90_000).unwrap(), None);
        assert_eq!(matching_step(&secret, "12345", T).unwrap(), None);
        assert_eq!(matching_step(&secret, "abcdef", T).unwrap(), None);
    }

    #[test]
    fn url_names_issuer_and_account() {
        let secret = new_secret().unwrap();
        let url = otpauth_url(&secret, "ops@example.com", "Reap3r").unwrap();
        assert!(
            url.starts_with("otpauth://totp/Reap3r:ops%40example.com?"),
            "{url}"
        );
        assert!(url.contains(&format!("secret={secret}")));
    }
}
