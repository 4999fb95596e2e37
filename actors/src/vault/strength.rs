//! Password strength: zxcvbn's score (0 very weak … 4 strong), kept per version and on the
//! secret for the "weak passwords" count. Only passwords are scored: a token or a key is
//! random by construction and zxcvbn would only misjudge it.

use super::model::SecretKind;

/// Scores below this count as weak on the dashboard.
pub const WEAK_BELOW: i64 = 3;
/// Longest value scored; zxcvbn's cost grows with length, and anything longer is not weak.
const MAX_SCORED_CHARS: usize = 256;

/// The score of a value of `kind`, or `None` for kinds that are not scored.
pub fn score(kind: SecretKind, value: &str) -> Option<i64> {
    if kind != SecretKind::Password {
        return None;
    }
    if value.chars().count() > MAX_SCORED_CHARS {
        return Some(4);
    }
    let score = zxcvbn::zxcvbn(value, &[]).score();
    Some(i64::from(u8::from(score)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_score_weak_and_long_random_ones_strong() {
        assert!(score(SecretKind::Password, "password").unwrap() < WEAK_BELOW);
        assert!(score(SecretKind::Password, "hunter2").unwrap() < WEAK_BELOW);
        assert_eq!(score(SecretKind::Password, "q8#Vt2!mZr6@Lw0$Xp4^"), Some(4));
        assert_eq!(score(SecretKind::ApiToken, "abc"), None);
    }
}
