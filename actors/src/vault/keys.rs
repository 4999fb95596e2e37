//! Master keys (KEKs) and what they seal. A master key never enters the database: rows hold
//! `r3v1:<key id>:<base64 of nonce ‖ AES-256-GCM ciphertext>`, and every seal names its AAD —
//! the table, the row and (for secrets) the org and version — so a sealed value copied to
//! another row, org or version does not open.

use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use zeroize::{Zeroize, Zeroizing};

use super::source::KeySource;
use crate::error::{DomainError, DomainResult};

/// What sealed text starts with; the key id and a `:` follow.
pub const SEALED_PREFIX: &str = "r3v1:";
/// Bytes of an AES-GCM nonce.
const NONCE_BYTES: usize = 12;
/// Longest sealed text opened (a secret's value, 64 KiB, base64, plus framing).
const MAX_SEALED_CHARS: usize = 96 * 1024;

/// A 256-bit master key and its public id (a BLAKE3 derivation: safe to store and to print).
#[derive(Clone)]
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let id = hex::encode(&blake3::derive_key("reap3r master key id v1", &bytes)[..8]);
        Self {
            key: Zeroizing::new(bytes),
            id,
        }
    }

    pub fn generate() -> DomainResult<Self> {
        let mut bytes = [0u8; 32];
        random(&mut bytes)?;
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as the key file writes it.
    pub(super) fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(*self.key))
    }

    /// Seals `plaintext` for `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> DomainResult<String> {
        let sealed = aead_seal(&self.key, aad, plaintext)?;
        Ok(format!("{SEALED_PREFIX}{}:{}", self.id, B64.encode(sealed)))
    }

    /// Opens text this key sealed for `aad`.
    fn open(&self, aad: &[u8], body: &str) -> DomainResult<Zeroizing<Vec<u8>>> {
        let bytes = B64
            .decode(body)
            .map_err(|_| sealed_error("sealed value is not base64"))?;
        aead_open(&self.key, aad, &bytes)
    }

    /// The known text sealed under this key, kept in `vault_master_keys`.
    pub fn check_text(&self) -> DomainResult<String> {
        self.seal(&check_aad(&self.id), CHECK_PLAINTEXT)
    }

    /// Whether `sealed` is this key's check text.
    pub fn matches_check(&self, sealed: &str) -> bool {
        matches!(split(sealed), Ok((id, body)) if id == self.id
            && self.open(&check_aad(&self.id), body).is_ok_and(|p| p.as_slice() == CHECK_PLAINTEXT))
    }
}

const CHECK_PLAINTEXT: &[u8] = b"reap3r vault master key check";

fn check_aad(id: &str) -> Vec<u8> {
    format!("reap3r vault_master_keys v1|{id}").into_bytes()
}

/// `(key id, base64 body)` of sealed text.
pub fn split(sealed: &str) -> DomainResult<(&str, &str)> {
    if sealed.len() > MAX_SEALED_CHARS {
        return Err(sealed_error("sealed value is too long"));
    }
    let rest = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or_else(|| sealed_error("value is not sealed"))?;
    rest.split_once(':')
        .ok_or_else(|| sealed_error("sealed value has no key id"))
}

/// Whether text is in the sealed form (plaintext from before the vault is not).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

pub(super) fn random(buf: &mut [u8]) -> DomainResult<()> {
    getrandom::fill(buf).map_err(|_| DomainError::unavailable("the system random source failed"))
}

fn sealed_error(what: &str) -> DomainError {
    DomainError::unavailable(format!("a sealed value cannot be opened: {what}"))
}

/// AES-256-GCM with a random nonce: `nonce ‖ ciphertext ‖ tag`.
pub(super) fn aead_seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> DomainResult<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| sealed_error("bad key length"))?;
    let mut nonce = [0u8; NONCE_BYTES];
    random(&mut nonce)?;
    let ct = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| sealed_error("encryption failed"))?;
    let mut out = Vec::with_capacity(NONCE_BYTES + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

pub(super) fn aead_open(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> DomainResult<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_BYTES + 16 {
        return Err(sealed_error("sealed value is too short"));
    }
    let (nonce, ct) = sealed.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| sealed_error("bad nonce"))?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| sealed_error("bad key length"))?;
    cipher
        .decrypt(&nonce.into(), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| sealed_error("it was sealed for another row, or tampered with"))
}

/// The master keys a node holds: the primary first. Shared by every operation; reloaded from
/// its source when a sealed value names a key it does not hold (a rotation by the CLI while
/// this node serves).
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<RwLock<Vec<MasterKey>>>,
    source: Option<Arc<KeySource>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys().iter().map(|k| k.id.clone()).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

impl Keyring {
    /// A keyring read from `source` (and reloaded from it).
    pub fn from_source(source: KeySource, keys: Vec<MasterKey>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(keys)),
            source: Some(Arc::new(source)),
        }
    }

    /// A keyring with one fresh key and no source: for tests and tools whose database lives
    /// as long as the process.
    #[expect(
        clippy::expect_used,
        reason = "a process whose random source fails cannot run tests or tools at all"
    )]
    pub fn ephemeral() -> Self {
        Self::fixed(vec![MasterKey::generate().expect("system random source")])
    }

    /// A keyring without keys, for tools whose operations seal nothing (issuing an enrolment
    /// token): anything that tries to seal or open fails with "no master key is loaded".
    pub fn none() -> Self {
        Self::fixed(Vec::new())
    }

    /// A keyring of given keys and no source (tests).
    pub fn fixed(keys: Vec<MasterKey>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(keys)),
            source: None,
        }
    }

    pub fn keys(&self) -> Vec<MasterKey> {
        self.inner.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// The first key: what this node seals with when the database names no other.
    pub fn first(&self) -> DomainResult<MasterKey> {
        self.keys()
            .into_iter()
            .next()
            .ok_or_else(|| DomainError::unavailable("no master key is loaded"))
    }

    pub fn source(&self) -> Option<&KeySource> {
        self.source.as_deref()
    }

    /// The key with `id`, reloading the source once if it is not held.
    pub fn key(&self, id: &str) -> DomainResult<MasterKey> {
        if let Some(key) = self.keys().into_iter().find(|k| k.id == id) {
            return Ok(key);
        }
        self.reload()?;
        self.keys().into_iter().find(|k| k.id == id).ok_or_else(|| {
            DomainError::unavailable(format!(
                "master key {id} is not available to this node; see docs/SECURITY.md"
            ))
        })
    }

    /// Reads the source again (keys added by a rotation), keeping keys already held.
    pub fn reload(&self) -> DomainResult<()> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let fresh = source
            .read()
            .map_err(|e| DomainError::unavailable(e.to_string()))?;
        if let Ok(mut held) = self.inner.write() {
            let old = std::mem::take(&mut *held);
            let mut merged = fresh;
            for key in old {
                if !merged.iter().any(|k| k.id == key.id) {
                    merged.push(key);
                }
            }
            *held = merged;
        }
        Ok(())
    }

    /// Opens sealed text for `aad` with whichever key sealed it.
    pub fn open(&self, aad: &[u8], sealed: &str) -> DomainResult<Zeroizing<Vec<u8>>> {
        let (id, body) = split(sealed)?;
        self.key(id)?.open(aad, body)
    }

    /// Opens sealed text that holds UTF-8.
    pub fn open_text(&self, aad: &[u8], sealed: &str) -> DomainResult<Zeroizing<String>> {
        let bytes = self.open(aad, sealed)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| sealed_error("it is not text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_own_aad_and_key() {
        let key = MasterKey::generate().unwrap();
        let ring = Keyring::fixed(vec![key.clone()]);
        let sealed = key
            .seal(b"users.mfa_secret|a", b"JBSWY3DPEHPK3PXP")
            .unwrap();
        assert!(sealed.starts_with(&format!("r3v1:{}:", key.id())));
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(
            ring.open(b"users.mfa_secret|a", &sealed)
                .unwrap()
                .as_slice(),
            b"JBSWY3DPEHPK3PXP"
        );
        // Another row's AAD: the row swap is refused.
        assert!(ring.open(b"users.mfa_secret|b", &sealed).is_err());
        // Another key with the same id cannot be made; a foreign key is simply unknown.
        let other = Keyring::ephemeral();
        assert!(other.open(b"users.mfa_secret|a", &sealed).is_err());
        // Tampering with one character of the body is found.
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(ring.open(b"users.mfa_secret|a", &tampered).is_err());
    }

    #[test]
    fn the_check_text_tells_the_right_key_from_a_wrong_one() {
        let key = MasterKey::generate().unwrap();
        let wrong = MasterKey::generate().unwrap();
        let check = key.check_text().unwrap();
        assert!(key.matches_check(&check));
        assert!(!wrong.matches_check(&check));
        assert_ne!(key.id(), wrong.id());
        assert_eq!(
            MasterKey::from_bytes([7; 32]).id(),
            MasterKey::from_bytes([7; 32]).id()
        );
    }

    #[test]
    fn plaintext_is_not_taken_for_sealed_text() {
        assert!(!is_sealed("{\"smtp_password\":\"x\"}"));
        assert!(split("JBSWY3DPEHPK3PXP").is_err());
        assert!(split("r3v1:nokeyid").is_err());
    }
}
