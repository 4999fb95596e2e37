//! Generated passwords for rotation: a length and the character classes to draw from, at least
//! one character of each class, uniformly random otherwise (rejection sampling, no modulo bias).

use super::keys::random;
use crate::error::{DomainError, DomainResult};

pub const MIN_GENERATED_LENGTH: usize = 12;
pub const MAX_GENERATED_LENGTH: usize = 128;
pub const DEFAULT_GENERATED_LENGTH: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CharClass {
    Lower,
    Upper,
    Digits,
    Symbols,
}

impl CharClass {
    pub const ALL: &'static [CharClass] = &[
        CharClass::Lower,
        CharClass::Upper,
        CharClass::Digits,
        CharClass::Symbols,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lower => "lower",
            Self::Upper => "upper",
            Self::Digits => "digits",
            Self::Symbols => "symbols",
        }
    }

    fn chars(self) -> &'static [u8] {
        match self {
            Self::Lower => b"abcdefghijkmnopqrstuvwxyz",
            Self::Upper => b"ABCDEFGHJKLMNPQRSTUVWXYZ",
            Self::Digits => b"23456789",
            // Symbols that survive shells, URLs and config files without quoting surprises.
            Self::Symbols => b"!#%+-.:=?@^_~",
        }
    }
}

impl std::str::FromStr for CharClass {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        CharClass::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| DomainError::invalid(format!("classes: unknown class {s:?}")))
    }
}

/// Checks a length and class set for generation.
pub fn check_recipe(length: usize, classes: &[CharClass]) -> DomainResult<()> {
    if !(MIN_GENERATED_LENGTH..=MAX_GENERATED_LENGTH).contains(&length) {
        return Err(DomainError::invalid(format!(
            "length: {MIN_GENERATED_LENGTH} to {MAX_GENERATED_LENGTH}"
        )));
    }
    if classes.is_empty() {
        return Err(DomainError::invalid("classes: name at least one"));
    }
    Ok(())
}

/// A random index below `n` (n ≤ 256) without modulo bias.
fn below(n: usize) -> DomainResult<usize> {
    let limit = 256 - 256 % n;
    loop {
        let mut b = [0u8; 1];
        random(&mut b)?;
        if usize::from(b[0]) < limit {
            return Ok(usize::from(b[0]) % n);
        }
    }
}

/// A password of `length` characters with at least one from each of `classes`.
pub fn generate_password(length: usize, classes: &[CharClass]) -> DomainResult<String> {
    check_recipe(length, classes)?;
    let mut classes = classes.to_vec();
    classes.sort();
    classes.dedup();
    let pool: Vec<u8> = classes
        .iter()
        .flat_map(|c| c.chars().iter().copied())
        .collect();
    let mut out: Vec<u8> = Vec::with_capacity(length);
    for class in &classes {
        let set = class.chars();
        out.push(set[below(set.len())?]);
    }
    while out.len() < length {
        out.push(pool[below(pool.len())?]);
    }
    // Fisher–Yates, so the guaranteed characters are not always first.
    for i in (1..out.len()).rev() {
        let j = below(i + 1)?;
        out.swap(i, j);
    }
    String::from_utf8(out).map_err(|_| DomainError::unavailable("generated text is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_have_their_length_and_every_class() {
        for _ in 0..50 {
            let pw = generate_password(16, CharClass::ALL).unwrap();
            assert_eq!(pw.len(), 16);
            for class in CharClass::ALL {
                assert!(
                    pw.bytes().any(|b| class.chars().contains(&b)),
                    "{pw} lacks {class:?}"
                );
            }
        }
        let digits = generate_password(12, &[CharClass::Digits]).unwrap();
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(
            generate_password(24, CharClass::ALL).unwrap(),
            generate_password(24, CharClass::ALL).unwrap()
        );
        assert!(generate_password(8, CharClass::ALL).is_err());
        assert!(generate_password(16, &[]).is_err());
    }
}
