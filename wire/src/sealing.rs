//! Secrets sealed to one agent: RFC 9180 HPKE in base mode with DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256 and AES-256-GCM, one single-shot seal per value.
//!
//! Each agent makes an X25519 key pair at enrolment ([`SealingSecret`]) and announces the public
//! half in every `Hello`. The server seals each secret a job needs to each target's key
//! ([`seal_value`]); the sealed values of one target travel as a [`SealedEnv`] in that target's
//! `JobDispatch`, and the BLAKE3 of its bytes is in the target's signed grant. Only the agent can
//! [open](open_value) them; the server keeps no way back.
//!
//! The associated data of every value is `job_id ‖ agent_id ‖ name`, so a sealed value opens only
//! for the job, the agent and the environment variable it was sealed for: moved to another job,
//! another agent or another name, it fails to open. The HPKE `info` is [`SEAL_INFO`].
//!
//! Decoding a [`SealedEnv`] checks every count and length against its cap (entries, name,
//! encapsulated key, ciphertext) from the length prefix, before anything is copied.
//!
//! No I/O and no randomness of its own: the caller passes a [`CryptoRng`] in (the agent and
//! the server use `rand_core::UnwrapErr(getrandom::SysRng)`).

use std::collections::BTreeSet;
use std::fmt;

use hpke::aead::{AeadTag, AesGcm256};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

pub use hpke::rand_core::CryptoRng;

use crate::metrics::Capped;

/// Most sealed values (secret environment variables) one job may give one agent.
pub const MAX_SEALED_SECRETS: usize = 16;
/// Longest plaintext of one sealed value, in bytes.
pub const MAX_SEALED_VALUE_BYTES: usize = 64 * 1024;
/// Longest name of a secret environment variable (ASCII, so characters are bytes).
pub const MAX_SECRET_ENV_NAME_CHARS: usize = 128;
/// The HPKE `info` of every sealed value (the context string of this format).
pub const SEAL_INFO: &[u8] = b"reap3r sealed env v1";

/// Length of an X25519 public key, private key and encapsulated key.
const KEY_LEN: usize = 32;
/// AES-256-GCM tag length: a ciphertext is the plaintext's length plus this.
const TAG_LEN: usize = 16;
/// Longest ciphertext a decoder accepts.
const MAX_CIPHERTEXT_BYTES: usize = MAX_SEALED_VALUE_BYTES + TAG_LEN;

type SealKem = X25519HkdfSha256;
type SealKdf = HkdfSha256;
type SealAead = AesGcm256;

/// Why a value could not be sealed, opened or decoded. Never carries a value's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("{0:?} is not a valid environment variable name")]
    BadName(String),
    #[error("sealed value of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("{count} sealed values exceed the limit of {max}")]
    TooMany { count: usize, max: usize },
    #[error("recipient key is not a usable X25519 public key")]
    BadKey,
    #[error("sealing failed")]
    Seal,
    /// Wrong key, wrong job, agent or name, or altered bytes: HPKE cannot tell them apart.
    #[error("sealed value does not open with this agent's key for this job and name")]
    Open,
    #[error("sealed env does not decode: {0}")]
    Malformed(String),
    /// The sealed names are not exactly the names asked for (names a variable, never a value).
    #[error("{0}")]
    Names(String),
}

/// Whether `name` may name a secret environment variable: `^[A-Za-z_][A-Za-z0-9_]*$`, at most
/// [`MAX_SECRET_ENV_NAME_CHARS`]. The server checks it when a job is created, the agent again
/// before it sets the variable.
pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= MAX_SECRET_ENV_NAME_CHARS
        && (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An agent's X25519 private key for sealed values. Zeroized when dropped; `Debug` shows only
/// the public key.
#[derive(Clone)]
pub struct SealingSecret {
    // hpke's X25519 private key wraps x25519-dalek's `StaticSecret`, which zeroizes on drop.
    private: <SealKem as Kem>::PrivateKey,
    public: [u8; KEY_LEN],
}

impl SealingSecret {
    /// A fresh key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let (private, public) = SealKem::gen_keypair_with_rng(rng);
        Self::from_parts(private, &public)
    }

    /// The key as [`to_bytes`](Self::to_bytes) gave it (clamped as X25519 requires).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<Self, SealError> {
        let private =
            <SealKem as Kem>::PrivateKey::from_bytes(bytes).map_err(|_| SealError::BadKey)?;
        let public = SealKem::sk_to_pk(&private);
        Ok(Self::from_parts(private, &public))
    }

    fn from_parts(
        private: <SealKem as Kem>::PrivateKey,
        public: &<SealKem as Kem>::PublicKey,
    ) -> Self {
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(&public.to_bytes());
        Self {
            private,
            public: out,
        }
    }

    /// The private key's bytes, for the agent's identity store.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // Written straight into the zeroizing buffer: no other copy is left behind.
        self.private.write_exact(out.as_mut_slice());
        out
    }

    /// The public key the agent announces in its `Hello`.
    pub fn public(&self) -> [u8; KEY_LEN] {
        self.public
    }
}

impl fmt::Debug for SealingSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingSecret")
            .field("public", &Hex(&self.public))
            .finish_non_exhaustive()
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One secret environment variable, sealed to one agent for one job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue {
    /// The variable's name (in the clear: the job's spec lists the names anyway).
    #[serde(deserialize_with = "capped_name")]
    pub name: String,
    /// HPKE's encapsulated key (32 bytes for X25519).
    #[serde(
        serialize_with = "as_bytes",
        deserialize_with = "capped_bytes::<_, KEY_LEN>"
    )]
    pub encapped_key: Vec<u8>,
    /// AES-256-GCM ciphertext with its 16-byte tag appended.
    #[serde(
        serialize_with = "as_bytes",
        deserialize_with = "capped_bytes::<_, MAX_CIPHERTEXT_BYTES>"
    )]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedValue")
            .field("name", &self.name)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The sealed values of one target of one job; postcard-encoded into `JobDispatch::sealed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedEnv {
    #[serde(deserialize_with = "capped_entries")]
    pub entries: Vec<SealedValue>,
}

impl SealedEnv {
    /// The postcard bytes that travel in the dispatch and whose BLAKE3 the grant carries.
    /// `TooMany` over [`MAX_SEALED_SECRETS`], so nothing is encoded that would not decode.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SealError> {
        if self.entries.len() > MAX_SEALED_SECRETS {
            return Err(SealError::TooMany {
                count: self.entries.len(),
                max: MAX_SEALED_SECRETS,
            });
        }
        postcard::to_allocvec(self).map_err(|e| SealError::Malformed(e.to_string()))
    }

    /// Decodes untrusted bytes; never panics, and refuses an entry count, name, key or
    /// ciphertext over its cap from the length prefix, before copying it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        postcard::from_bytes(bytes).map_err(|e| SealError::Malformed(e.to_string()))
    }

    /// The hash a grant's `sealed_hash` commits to.
    pub fn hash_bytes(bytes: &[u8]) -> [u8; 32] {
        *blake3::hash(bytes).as_bytes()
    }

    /// Whether the entries name exactly `wanted` (a spec's `secret_env`): every name valid and
    /// listed once, none missing, none extra, none sealed twice. The server checks it when a
    /// job is created, the agent when it verifies the dispatch. `Names` says what is wrong.
    pub fn check_names(&self, wanted: &[String]) -> Result<(), SealError> {
        let wrong = |why: String| Err(SealError::Names(why));
        if wanted.len() > MAX_SEALED_SECRETS {
            return Err(SealError::TooMany {
                count: wanted.len(),
                max: MAX_SEALED_SECRETS,
            });
        }
        let mut want = BTreeSet::new();
        for name in wanted {
            if !valid_env_name(name) {
                return wrong(format!("{name:?} is not a valid variable name"));
            }
            if !want.insert(name.as_str()) {
                return wrong(format!("the spec names {name} twice"));
            }
        }
        let mut got = BTreeSet::new();
        for entry in &self.entries {
            if !want.contains(entry.name.as_str()) {
                return wrong(format!("{:?} is not a secret the spec names", entry.name));
            }
            if !got.insert(entry.name.as_str()) {
                return wrong(format!("{} is sealed twice", entry.name));
            }
        }
        match want.difference(&got).next() {
            Some(missing) => wrong(format!("{missing} is missing")),
            None => Ok(()),
        }
    }
}

/// The associated data of a value: it opens only for this job, this agent and this name.
fn aad(job_id: &[u8; 16], agent_id: &[u8; 16], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + name.len());
    aad.extend_from_slice(job_id);
    aad.extend_from_slice(agent_id);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Seals `plaintext` as the variable `name` of job `job_id` to the agent `agent_id` whose
/// public key is `recipient`. `BadName` for an invalid name, `TooLarge` over
/// [`MAX_SEALED_VALUE_BYTES`], `BadKey` for a low-order recipient key.
pub fn seal_value(
    recipient: &[u8; 32],
    job_id: &[u8; 16],
    agent_id: &[u8; 16],
    name: &str,
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<SealedValue, SealError> {
    if !valid_env_name(name) {
        return Err(SealError::BadName(name.to_owned()));
    }
    if plaintext.len() > MAX_SEALED_VALUE_BYTES {
        return Err(SealError::TooLarge {
            len: plaintext.len(),
            max: MAX_SEALED_VALUE_BYTES,
        });
    }
    let recipient =
        <SealKem as Kem>::PublicKey::from_bytes(recipient).map_err(|_| SealError::BadKey)?;
    let (encapped, ciphertext) = hpke::single_shot_seal_with_rng::<SealAead, SealKdf, SealKem>(
        &OpModeS::Base,
        &recipient,
        SEAL_INFO,
        plaintext,
        &aad(job_id, agent_id, name),
        rng,
    )
    .map_err(|e| match e {
        hpke::HpkeError::EncapError => SealError::BadKey,
        _ => SealError::Seal,
    })?;
    Ok(SealedValue {
        name: name.to_owned(),
        encapped_key: encapped.to_bytes().to_vec(),
        ciphertext,
    })
}

/// Opens a value sealed to `secret` for job `job_id` and agent `agent_id` under its name. The
/// plaintext is decrypted in place in a buffer that is zeroized when dropped. `Open` for a
/// wrong key, job, agent or name, or altered bytes.
pub fn open_value(
    secret: &SealingSecret,
    job_id: &[u8; 16],
    agent_id: &[u8; 16],
    value: &SealedValue,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if !valid_env_name(&value.name) {
        return Err(SealError::BadName(value.name.clone()));
    }
    let body_len = value
        .ciphertext
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(SealError::Open)?;
    if body_len > MAX_SEALED_VALUE_BYTES {
        return Err(SealError::TooLarge {
            len: body_len,
            max: MAX_SEALED_VALUE_BYTES,
        });
    }
    let encapped = <SealKem as Kem>::EncappedKey::from_bytes(&value.encapped_key)
        .map_err(|_| SealError::Open)?;
    let (body, tag) = value.ciphertext.split_at(body_len);
    let tag = AeadTag::<SealAead>::from_bytes(tag).map_err(|_| SealError::Open)?;
    let mut plaintext = Zeroizing::new(body.to_vec());
    hpke::single_shot_open_inout_detached::<SealAead, SealKdf, SealKem>(
        &OpModeR::Base,
        &secret.private,
        &encapped,
        SEAL_INFO,
        plaintext.as_mut_slice().into(),
        &aad(job_id, agent_id, &value.name),
        &tag,
    )
    .map_err(|_| SealError::Open)?;
    Ok(plaintext)
}

// Capped decoding. postcard hands a borrowed `str` or byte slice to the visitor, so a length is
// checked before anything is copied; a sequence's exact length prefix is checked by `Capped`.

fn as_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    // postcard encodes bytes exactly as a sequence of u8: a varint length, then the bytes.
    s.serialize_bytes(bytes)
}

fn capped_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SealedValue>, D::Error> {
    Capped::<SealedValue, MAX_SEALED_SECRETS>::deserialize(d).map(Capped::into_vec)
}

fn capped_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct NameVisitor;
    impl Visitor<'_> for NameVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a name of at most {MAX_SECRET_ENV_NAME_CHARS} bytes")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.len() > MAX_SECRET_ENV_NAME_CHARS {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(NameVisitor)
}

fn capped_bytes<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<Vec<u8>, D::Error> {
    struct BytesVisitor<const N: usize>;
    impl<'de, const N: usize> Visitor<'de> for BytesVisitor<N> {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {N} bytes")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() > N {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_vec())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Self-describing formats (JSON in tests) give a sequence of numbers instead.
            let hint = seq.size_hint().unwrap_or(0);
            if hint > N {
                return Err(de::Error::invalid_length(hint, &self));
            }
            let mut out = Vec::with_capacity(hint);
            while let Some(b) = seq.next_element::<u8>()? {
                if out.len() == N {
                    return Err(de::Error::invalid_length(N + 1, &self));
                }
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(BytesVisitor::<N>)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::convert::Infallible;

    use hpke::rand_core::{TryCryptoRng, TryRng};

    use super::*;

    /// A deterministic generator for tests (BLAKE3 in XOF mode over a seed).
    pub(crate) struct TestRng(blake3::OutputReader);

    impl TestRng {
        pub(crate) fn new(seed: &str) -> Self {
            Self(blake3::Hasher::new().update(seed.as_bytes()).finalize_xof())
        }
    }

    impl TryRng for TestRng {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            let mut b = [0u8; 4];
            self.0.fill(&mut b);
            Ok(u32::from_le_bytes(b))
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            let mut b = [0u8; 8];
            self.0.fill(&mut b);
            Ok(u64::from_le_bytes(b))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            self.0.fill(dst);
            Ok(())
        }
    }

    impl TryCryptoRng for TestRng {}

    const JOB: [u8; 16] = [1; 16];
    const AGENT: [u8; 16] = [2; 16];

    fn agent_key(seed: &str) -> SealingSecret {
        SealingSecret::generate(&mut TestRng::new(seed))
    }

    fn sealed(secret: &SealingSecret, name: &str, value: &[u8]) -> SealedValue {
        seal_value(
            &secret.public(),
            &JOB,
            &AGENT,
            name,
            value,
            &mut TestRng::new("seal"),
        )
        .unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_the_agents_key_through_its_encoding() {
        let key = agent_key("agent");
        let env = SealedEnv {
            entries: vec![
                sealed(&key, "DB_PASS", b"hunter2"),
                sealed(&key, "EMPTY", b""),
            ],
        };
        assert_eq!(env.entries[0].encapped_key.len(), 32);
        assert_eq!(env.entries[0].ciphertext.len(), 7 + 16);
        let bytes = env.to_bytes().unwrap();
        let back = SealedEnv::from_bytes(&bytes).unwrap();
        assert_eq!(back, env);
        let opened = open_value(&key, &JOB, &AGENT, &back.entries[0]).unwrap();
        assert_eq!(opened.as_slice(), b"hunter2");
        assert!(
            open_value(&key, &JOB, &AGENT, &back.entries[1])
                .unwrap()
                .is_empty()
        );
        let big = vec![7u8; MAX_SEALED_VALUE_BYTES];
        let value = sealed(&key, "BIG", &big);
        assert_eq!(
            open_value(&key, &JOB, &AGENT, &value).unwrap().as_slice(),
            big
        );
    }

    #[test]
    fn the_private_key_survives_its_bytes_and_is_not_shown() {
        let key = agent_key("agent");
        let again = SealingSecret::from_bytes(&key.to_bytes()).unwrap();
        assert_eq!(again.public(), key.public());
        let value = sealed(&key, "A", b"x");
        assert_eq!(
            open_value(&again, &JOB, &AGENT, &value).unwrap().as_slice(),
            b"x"
        );
        let shown = format!("{key:?}");
        let private_hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&private_hex), "{shown}");
        let public_hex: String = key.public().iter().map(|b| format!("{b:02x}")).collect();
        assert!(shown.contains(&public_hex), "{shown}");
        assert!(!format!("{value:?}").contains("ciphertext:"));
    }

    #[test]
    fn another_agents_key_cannot_open_it() {
        let value = sealed(&agent_key("agent"), "DB_PASS", b"hunter2");
        assert_eq!(
            open_value(&agent_key("other agent"), &JOB, &AGENT, &value),
            Err(SealError::Open)
        );
    }

    #[test]
    fn a_value_moved_to_another_job_agent_or_name_does_not_open() {
        let key = agent_key("agent");
        let value = sealed(&key, "DB_PASS", b"hunter2");
        assert_eq!(
            open_value(&key, &[9; 16], &AGENT, &value),
            Err(SealError::Open)
        );
        assert_eq!(
            open_value(&key, &JOB, &[9; 16], &value),
            Err(SealError::Open)
        );
        let renamed = SealedValue {
            name: "DB_USER".into(),
            ..value.clone()
        };
        assert_eq!(
            open_value(&key, &JOB, &AGENT, &renamed),
            Err(SealError::Open)
        );
        // Another value's key material with this one's ciphertext does not open either.
        let other = seal_value(
            &key.public(),
            &JOB,
            &AGENT,
            "DB_PASS",
            b"hunter3",
            &mut TestRng::new("another ephemeral key"),
        )
        .unwrap();
        assert_ne!(other.encapped_key, value.encapped_key);
        let spliced = SealedValue {
            encapped_key: other.encapped_key,
            ..value
        };
        assert_eq!(
            open_value(&key, &JOB, &AGENT, &spliced),
            Err(SealError::Open)
        );
    }

    #[test]
    fn altered_bytes_do_not_open() {
        let key = agent_key("agent");
        let value = sealed(&key, "DB_PASS", b"hunter2");
        for i in 0..value.ciphertext.len() {
            let mut bad = value.clone();
            bad.ciphertext[i] ^= 1;
            assert_eq!(
                open_value(&key, &JOB, &AGENT, &bad),
                Err(SealError::Open),
                "byte {i}"
            );
        }
        let mut bad = value.clone();
        bad.encapped_key[0] ^= 1;
        assert_eq!(open_value(&key, &JOB, &AGENT, &bad), Err(SealError::Open));
        let mut short = value.clone();
        short.ciphertext.truncate(TAG_LEN - 1);
        assert_eq!(open_value(&key, &JOB, &AGENT, &short), Err(SealError::Open));
        let mut short_key = value;
        short_key.encapped_key.pop();
        assert_eq!(
            open_value(&key, &JOB, &AGENT, &short_key),
            Err(SealError::Open)
        );
    }

    #[test]
    fn env_names_follow_the_shell_rule() {
        for ok in [
            "A",
            "_",
            "DB_PASS",
            "a1",
            "_9",
            &"X".repeat(MAX_SECRET_ENV_NAME_CHARS),
        ] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A=B",
            "A B",
            "Ä",
            "A\0",
            &"X".repeat(MAX_SECRET_ENV_NAME_CHARS + 1),
        ] {
            assert!(!valid_env_name(bad), "{bad:?}");
        }
        let key = agent_key("agent");
        assert_eq!(
            seal_value(
                &key.public(),
                &JOB,
                &AGENT,
                "A=B",
                b"x",
                &mut TestRng::new("r")
            ),
            Err(SealError::BadName("A=B".into()))
        );
    }

    #[test]
    fn oversized_input_is_refused_when_sealing_and_decoding() {
        let key = agent_key("agent");
        let too_big = vec![0u8; MAX_SEALED_VALUE_BYTES + 1];
        assert_eq!(
            seal_value(
                &key.public(),
                &JOB,
                &AGENT,
                "A",
                &too_big,
                &mut TestRng::new("r")
            ),
            Err(SealError::TooLarge {
                len: MAX_SEALED_VALUE_BYTES + 1,
                max: MAX_SEALED_VALUE_BYTES
            })
        );
        // A low-order recipient key (all zeros) cannot be sealed to.
        assert_eq!(
            seal_value(&[0; 32], &JOB, &AGENT, "A", b"x", &mut TestRng::new("r")),
            Err(SealError::BadKey)
        );

        let one = sealed(&key, "A", b"x");
        let many = SealedEnv {
            entries: vec![one.clone(); MAX_SEALED_SECRETS + 1],
        };
        assert!(matches!(many.to_bytes(), Err(SealError::TooMany { .. })));
        // Encoded anyway (as a hostile server could), the count is refused when decoding.
        let bytes = postcard::to_allocvec(&many).unwrap();
        assert!(SealedEnv::from_bytes(&bytes).is_err());
        let full = SealedEnv {
            entries: vec![one.clone(); MAX_SEALED_SECRETS],
        };
        assert!(SealedEnv::from_bytes(&full.to_bytes().unwrap()).is_ok());

        let long_name = SealedValue {
            name: "N".repeat(MAX_SECRET_ENV_NAME_CHARS + 1),
            ..one.clone()
        };
        let long_key = SealedValue {
            encapped_key: vec![0; KEY_LEN + 1],
            ..one.clone()
        };
        let long_text = SealedValue {
            ciphertext: vec![0; MAX_CIPHERTEXT_BYTES + 1],
            ..one.clone()
        };
        for bad in [long_name, long_key, long_text] {
            let bytes = postcard::to_allocvec(&SealedEnv { entries: vec![bad] }).unwrap();
            assert!(SealedEnv::from_bytes(&bytes).is_err());
        }
        // A length prefix claiming 4 GiB of ciphertext is refused without allocating it.
        let mut hostile = vec![1u8, 1, b'A', 32];
        hostile.extend_from_slice(&[0; 32]);
        hostile.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(SealedEnv::from_bytes(&hostile).is_err());
        assert!(SealedEnv::from_bytes(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert_eq!(SealedEnv::from_bytes(&[0]), Ok(SealedEnv::default()));
    }
}
