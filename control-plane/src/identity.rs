//! The server's long-lived identity: a self-signed TLS certificate, an Ed25519 signing key and
//! the QUIC endpoint secret, created in the data dir at first start (files 0600) and reused
//! afterwards.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use reap3r_wire::SigningKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CERT_FILE: &str = "tls-cert.der";
const CERT_KEY_FILE: &str = "tls-key.der";
const SIGNING_KEY_FILE: &str = "server-signing.key";
const QUIC_SECRET_FILE: &str = "quic-reset.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

pub struct ServerIdentity {
    pub cert: CertificateDer<'static>,
    pub cert_key: PrivatePkcs8KeyDer<'static>,
    pub signing_key: SigningKey,
    /// Keys the QUIC endpoint's stateless resets and connection ids (see
    /// `gateway::endpoint_config`): kept so that a restarted process recognises the connection
    /// ids of the one before and resets those connections at their first packet.
    pub quic_secret: [u8; 32],
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Loads the identity from `dir`, creating any missing part.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        create_private_dir(dir)?;
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(CERT_KEY_FILE);
        if read_opt(&cert_path)?.is_none() || read_opt(&key_path)?.is_none() {
            let generated =
                rcgen::generate_simple_self_signed(vec![reap3r_wire::SERVER_NAME.to_string()])
                    .map_err(|e| IdentityError::Generate(e.to_string()))?;
            // Key before certificate: a certificate on disk always has its key next to it.
            create_if_absent(&key_path, &generated.signing_key.serialize_der())?;
            create_if_absent(&cert_path, generated.cert.der())?;
        }
        let signing_key = SigningKey::from_bytes(&load_or_create_secret(dir, SIGNING_KEY_FILE)?);
        let quic_secret = load_or_create_secret(dir, QUIC_SECRET_FILE)?;
        // Always read back what is on disk: if another process won the race, use its files.
        let cert = read_required(&cert_path)?;
        let cert_key = read_required(&key_path)?;
        Ok(Self {
            cert: CertificateDer::from(cert),
            cert_key: PrivatePkcs8KeyDer::from(cert_key),
            signing_key,
            quic_secret,
        })
    }

    /// SHA-256 of the certificate, hex; agents pin it.
    pub fn fingerprint(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.cert))
    }

    /// The server's Ed25519 public key, hex; agents pin it.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing_key.verifying_key().to_bytes())
    }

    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.cert_key.clone_key())
    }
}

/// A random 32-byte secret kept in `dir/file`, made at first start.
fn load_or_create_secret(dir: &Path, file: &str) -> Result<[u8; 32], IdentityError> {
    let path = dir.join(file);
    if read_opt(&path)?.is_none() {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Generate(e.to_string()))?;
        create_if_absent(&path, &seed)?;
    }
    // Read back what is on disk: if another process won the race, use its secret.
    read_required(&path)?
        .as_slice()
        .try_into()
        .map_err(|_| IdentityError::Corrupt {
            path: path.clone(),
            reason: "expected 32 bytes".into(),
        })
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

fn read_required(path: &Path) -> Result<Vec<u8>, IdentityError> {
    read_opt(path)?.ok_or_else(|| IdentityError::Corrupt {
        path: path.to_path_buf(),
        reason: "missing".into(),
    })
}

/// Creates a secret file readable only by its owner, fully written before it appears (temp file,
/// then a hard link that fails if the name exists), so a crash or a concurrent process never
/// sees half a key.
fn create_if_absent(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(IdentityError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The release key's file in the data dir, when it is kept there (`reap3r release add` makes it
/// at first use unless `--release-key` names another).
pub const RELEASE_KEY_FILE: &str = "release.key";
/// The release key's public half, which the server sends agents to pin; written by
/// `reap3r release add`, so a node never needs the private key.
pub const RELEASE_PUB_FILE: &str = "release.pub";

/// The release signing key in `path` (32 bytes, 0600), made there if absent. Its public half is
/// written to `data_dir/release.pub`; a data dir that already pins another release key is
/// refused (agents pinned that one: a build signed by another key would be refused by all).
pub fn release_signing_key(path: &Path, data_dir: &Path) -> Result<SigningKey, IdentityError> {
    let (dir, file) = match (path.parent(), path.file_name().and_then(|f| f.to_str())) {
        (Some(dir), Some(file)) => (dir, file),
        _ => {
            return Err(IdentityError::Corrupt {
                path: path.to_path_buf(),
                reason: "not a file path".into(),
            });
        }
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let key = SigningKey::from_bytes(&load_or_create_secret(dir, file)?);
    let public = key.verifying_key().to_bytes();
    let pub_path = data_dir.join(RELEASE_PUB_FILE);
    match read_opt(&pub_path)? {
        None => create_if_absent(&pub_path, &public)?,
        Some(pinned) if pinned == public => {}
        Some(_) => {
            return Err(IdentityError::Corrupt {
                path: pub_path,
                reason: "this data dir pins another release key (agents pinned it too); sign \
                         with that key"
                    .into(),
            });
        }
    }
    Ok(key)
}

/// The release key's public half this node sends agents: `release.pub` in the data dir, else
/// the public half of `release.key` there; `None` when neither exists (no releases yet).
pub fn release_public_key(data_dir: &Path) -> Result<Option<[u8; 32]>, IdentityError> {
    let corrupt = |path: PathBuf| IdentityError::Corrupt {
        path,
        reason: "expected 32 bytes".into(),
    };
    let pub_path = data_dir.join(RELEASE_PUB_FILE);
    if let Some(bytes) = read_opt(&pub_path)? {
        return <[u8; 32]>::try_from(bytes.as_slice())
            .map(Some)
            .map_err(|_| corrupt(pub_path));
    }
    let key_path = data_dir.join(RELEASE_KEY_FILE);
    match read_opt(&key_path)? {
        None => Ok(None),
        Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map(|seed| Some(SigningKey::from_bytes(&seed).verifying_key().to_bytes()))
            .map_err(|_| corrupt(key_path)),
    }
}
