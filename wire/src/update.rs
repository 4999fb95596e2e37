//! Agent self-update on the wire: the release manifest an operator's release key signs (a key
//! of its own, not the server's: a stolen server key, or a database writer, cannot make agents
//! run a build), agent versions and how they compare, and the checks an agent makes before it
//! puts a build in place of its own.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation for release manifest signatures.
const MANIFEST_CONTEXT: &[u8] = b"reap3r release manifest v1\0";

/// What an agent that pinned a release key reports in its hello (then the key, hex): the server
/// updates only agents that can check a release's signature.
pub const RELEASE_KEY_CAPABILITY: &str = "release_key:";

/// The capability naming `key` as the agent's pinned release key.
pub fn release_key_capability(key: &[u8; 32]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{RELEASE_KEY_CAPABILITY}{hex}")
}

/// Longest version or platform string, in bytes.
pub const MAX_RELEASE_LABEL_BYTES: usize = 64;

/// One agent build: what it is, for which platform, and the BLAKE3 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// `MAJOR.MINOR.PATCH` ([`AgentVersion`]).
    pub version: String,
    /// `<os>-<arch>` as the agent reports it, e.g. `linux-x86_64`.
    pub platform: String,
    pub size: u64,
    pub blake3: [u8; 32],
    pub created_at_ms: u64,
}

impl ReleaseManifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The manifest's bytes as signed, and the release key's signature over them.
    pub fn sign(&self, release_key: &SigningKey) -> (Vec<u8>, [u8; 64]) {
        let bytes = self.to_bytes();
        let signature = crate::grant::sign(MANIFEST_CONTEXT, &bytes, release_key);
        (bytes, signature)
    }

    /// A manifest as received: signed by `release_key`, decodable, with a version and platform
    /// that parse.
    pub fn verify(
        bytes: &[u8],
        signature: &[u8],
        release_key: &VerifyingKey,
    ) -> Result<Self, UpdateRefusal> {
        if !crate::grant::verify(MANIFEST_CONTEXT, bytes, signature, release_key) {
            return Err(UpdateRefusal::BadSignature);
        }
        let manifest: Self =
            postcard::from_bytes(bytes).map_err(|e| UpdateRefusal::Malformed(e.to_string()))?;
        AgentVersion::parse(&manifest.version)
            .ok_or_else(|| UpdateRefusal::Malformed(format!("version {:?}", manifest.version)))?;
        if !is_label(&manifest.platform) {
            return Err(UpdateRefusal::Malformed(format!(
                "platform {:?}",
                manifest.platform
            )));
        }
        Ok(manifest)
    }
}

/// Whether `text` can be a platform: 1 to 64 bytes of `[a-z0-9_.-]`.
pub fn is_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_RELEASE_LABEL_BYTES
        && text
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// An agent version: `MAJOR.MINOR.PATCH`, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentVersion(pub u32, pub u32, pub u32);

impl AgentVersion {
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > MAX_RELEASE_LABEL_BYTES {
            return None;
        }
        let mut parts = text.split('.');
        let mut next = || -> Option<u32> {
            let part = parts.next()?;
            // No signs, no leading zeros (but "0"), no empty parts.
            let plain = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'));
            plain.then(|| part.parse().ok()).flatten()
        };
        let version = Self(next()?, next()?, next()?);
        parts.next().is_none().then_some(version)
    }
}

impl std::fmt::Display for AgentVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Why an agent does not take a build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefusal {
    #[error("the release manifest is not signed by the pinned release key")]
    BadSignature,
    #[error("the agent has no release key pinned")]
    NoReleaseKey,
    #[error("the release manifest does not decode: {0}")]
    Malformed(String),
    #[error("the build is for {build}, this agent runs on {agent}")]
    WrongPlatform { build: String, agent: String },
    #[error("the agent already runs {0}")]
    SameVersion(String),
    #[error("{build} is older than the running {running}: a downgrade must be forced")]
    Downgrade { build: String, running: String },
    #[error("the downloaded build does not match its manifest: {0}")]
    Mismatch(String),
}

/// Whether an agent running `running` on `platform` takes `manifest`: the platform must match,
/// and the version be newer (older only when `force`; never the same).
pub fn check_update(
    manifest: &ReleaseManifest,
    running: &str,
    platform: &str,
    force: bool,
) -> Result<(), UpdateRefusal> {
    if manifest.platform != platform {
        return Err(UpdateRefusal::WrongPlatform {
            build: manifest.platform.clone(),
            agent: platform.to_owned(),
        });
    }
    let build = AgentVersion::parse(&manifest.version)
        .ok_or_else(|| UpdateRefusal::Malformed(format!("version {:?}", manifest.version)))?;
    // A running version that does not parse (a development build) takes any release.
    let Some(current) = AgentVersion::parse(running) else {
        return Ok(());
    };
    if build == current {
        return Err(UpdateRefusal::SameVersion(running.to_owned()));
    }
    if build < current && !force {
        return Err(UpdateRefusal::Downgrade {
            build: build.to_string(),
            running: current.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str) -> ReleaseManifest {
        ReleaseManifest {
            version: version.into(),
            platform: "linux-x86_64".into(),
            size: 10,
            blake3: [1; 32],
            created_at_ms: 0,
        }
    }

    #[test]
    fn versions_parse_strictly_and_compare_numerically() {
        let v = |s| AgentVersion::parse(s);
        assert_eq!(v("0.1.0"), Some(AgentVersion(0, 1, 0)));
        assert!(v("0.10.0") > v("0.9.9"));
        assert!(v("1.0.0") > v("0.99.99"));
        for bad in [
            "", "1", "1.2", "1.2.3.4", "01.2.3", "1.-2.3", "1.2.x", "1..3", " 1.2.3",
        ] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
        assert_eq!(AgentVersion(2, 0, 11).to_string(), "2.0.11");
    }

    #[test]
    fn manifests_verify_only_under_the_release_key() {
        let release = SigningKey::from_bytes(&[5; 32]);
        let (bytes, signature) = manifest("0.2.0").sign(&release);
        let key = release.verifying_key();
        assert_eq!(
            ReleaseManifest::verify(&bytes, &signature, &key),
            Ok(manifest("0.2.0"))
        );
        // The server's key (or any other) does not make a release.
        let server = SigningKey::from_bytes(&[6; 32]);
        let (_, forged) = manifest("0.2.0").sign(&server);
        assert_eq!(
            ReleaseManifest::verify(&bytes, &forged, &key),
            Err(UpdateRefusal::BadSignature)
        );
        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            ReleaseManifest::verify(&tampered, &signature, &key),
            Err(UpdateRefusal::BadSignature)
        );
        // A job grant's signature over the same bytes is not a manifest's.
        let grant_sig = crate::grant::sign(b"reap3r job grant v2\0", &bytes, &release);
        assert_eq!(
            ReleaseManifest::verify(&bytes, &grant_sig, &key),
            Err(UpdateRefusal::BadSignature)
        );
        let (odd, sig) = ReleaseManifest {
            platform: "Linux x86".into(),
            ..manifest("0.2.0")
        }
        .sign(&release);
        assert!(matches!(
            ReleaseManifest::verify(&odd, &sig, &key),
            Err(UpdateRefusal::Malformed(_))
        ));
    }

    #[test]
    fn downgrades_need_force_and_the_same_version_is_refused() {
        let check = |build: &str, running: &str, force| {
            check_update(&manifest(build), running, "linux-x86_64", force)
        };
        assert_eq!(check("0.2.0", "0.1.0", false), Ok(()));
        assert!(matches!(
            check("0.1.0", "0.2.0", false),
            Err(UpdateRefusal::Downgrade { .. })
        ));
        assert_eq!(check("0.1.0", "0.2.0", true), Ok(()));
        assert!(matches!(
            check("0.2.0", "0.2.0", true),
            Err(UpdateRefusal::SameVersion(_))
        ));
        assert!(matches!(
            check_update(&manifest("0.2.0"), "0.1.0", "linux-aarch64", false),
            Err(UpdateRefusal::WrongPlatform { .. })
        ));
    }
}
