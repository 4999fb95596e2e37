//! Where the master keys come from: a key file (the default one in the data dir, created at
//! first start, or `REAP3R_MASTER_KEY_FILE`) or a command that prints them (a KMS or HSM
//! client). Either way the text is one key per line, 64 hex digits, the primary first; blank
//! lines and `#` comments are ignored. Nothing here ever overwrites a key.

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::keys::MasterKey;

/// Most keys a source may hold (a rotation adds one and retires one).
pub const MAX_MASTER_KEYS: usize = 16;
/// Longest key text read from a file or a command.
const MAX_KEY_TEXT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file (created, 0600, for a fresh database).
    File(PathBuf),
    /// A command run with `sh -c` whose standard output is the key text.
    Command(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    #[error("master key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("master key file {path} is readable by other users (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("master key command failed: {0}")]
    Command(String),
    #[error("{origin}: line {line}: {why}")]
    Parse {
        origin: String,
        line: usize,
        why: String,
    },
    #[error("{0} holds no master key")]
    Empty(String),
    #[error(
        "the master key is given by a command; put the new key first in its output, then rotate"
    )]
    NotWritable,
}

impl KeySource {
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("master key file {}", path.display()),
            Self::Command(_) => "master key command".to_owned(),
        }
    }

    /// Whether the source exists yet (a command always does).
    pub fn exists(&self) -> bool {
        match self {
            Self::File(path) => path.exists(),
            Self::Command(_) => true,
        }
    }

    /// The keys, primary first.
    pub fn read(&self) -> Result<Vec<MasterKey>, KeySourceError> {
        let text = match self {
            Self::File(path) => read_file(path)?,
            Self::Command(cmd) => run(cmd)?,
        };
        parse(&text, &self.describe())
    }

    /// Creates the key file with one new key; never replaces an existing file.
    pub fn create(&self) -> Result<MasterKey, KeySourceError> {
        let Self::File(path) = self else {
            return Err(KeySourceError::NotWritable);
        };
        let key =
            MasterKey::generate().map_err(|e| io(path, std::io::Error::other(e.to_string())))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(path, e))?;
        }
        let mut file = private_options()
            .create_new(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        file.write_all(key_text(std::slice::from_ref(&key)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io(path, e))?;
        Ok(key)
    }

    /// Writes `keys` as the whole key file (primary first): to a temporary file beside it,
    /// synced, then renamed over, so a crash leaves the old file or the new one.
    pub fn write_all(&self, keys: &[MasterKey]) -> Result<(), KeySourceError> {
        let Self::File(path) = self else {
            return Err(KeySourceError::NotWritable);
        };
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        let mut file = private_options()
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        file.write_all(key_text(keys).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn key_text(keys: &[MasterKey]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::from(
        "# Reap3r master keys, primary first. Back this file up apart from the database.\n",
    ));
    for key in keys {
        text.push_str(&key.to_hex());
        text.push('\n');
    }
    text
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn io(path: &Path, source: std::io::Error) -> KeySourceError {
    KeySourceError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<String>, KeySourceError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| io(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeySourceError::Permissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    if bytes.len() > MAX_KEY_TEXT_BYTES {
        return Err(io(
            path,
            std::io::Error::other("the file is too large for a key file"),
        ));
    }
    String::from_utf8(bytes)
        .map(Zeroizing::new)
        .map_err(|_| io(path, std::io::Error::other("the file is not text")))
}

fn run(cmd: &str) -> Result<Zeroizing<String>, KeySourceError> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| KeySourceError::Command(e.to_string()))?;
    if !out.status.success() {
        // Its stderr is shown (it says why); its stdout could hold keys and is not.
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(KeySourceError::Command(format!(
            "exited with {}: {}",
            out.status,
            err.trim().chars().take(500).collect::<String>()
        )));
    }
    if out.stdout.len() > MAX_KEY_TEXT_BYTES {
        return Err(KeySourceError::Command("printed too much".into()));
    }
    String::from_utf8(out.stdout)
        .map(Zeroizing::new)
        .map_err(|_| KeySourceError::Command("printed something that is not text".into()))
}

/// Parses key text: one 64-hex-digit key per line, primary first.
pub fn parse(text: &str, origin: &str) -> Result<Vec<MasterKey>, KeySourceError> {
    let mut keys: Vec<MasterKey> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let why = |why: &str| KeySourceError::Parse {
            origin: origin.to_owned(),
            line: n + 1,
            why: why.to_owned(),
        };
        if line.len() != 64 {
            return Err(why("a key is 64 hex digits"));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(line, bytes.as_mut_slice()).map_err(|_| why("not hex"))?;
        let key = MasterKey::from_bytes(*bytes);
        if keys.iter().any(|k| k.id() == key.id()) {
            return Err(why("the same key twice"));
        }
        if keys.len() == MAX_MASTER_KEYS {
            return Err(why("too many keys"));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeySourceError::Empty(origin.to_owned()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_parses_primary_first_and_refuses_nonsense() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let keys = parse(&format!("# comment\n\n{a}\n{b}\n"), "test").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].id(), MasterKey::from_bytes([0x11; 32]).id());
        for bad in [
            "",
            "# only a comment\n",
            "abc\n",
            &format!("{a}\n{a}\n"),
            &"zz".repeat(32),
        ] {
            assert!(parse(bad, "test").is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_key_file_is_created_private_once_and_rewritten_atomically() {
        let dir = std::env::temp_dir().join(format!("reap3r-keys-{}", uuid::Uuid::now_v7()));
        let source = KeySource::File(dir.join("master.key"));
        assert!(!source.exists());
        let first = source.create().unwrap();
        assert!(
            source.create().is_err(),
            "an existing key file is never replaced"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        #[cfg(unix)]
        {
            // A key file others can read is refused, naming the fix.
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join("master.key");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = source.read().unwrap_err();
            assert!(matches!(err, KeySourceError::Permissions { .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let second = MasterKey::generate().unwrap();
        source.write_all(&[second.clone(), first.clone()]).unwrap();
        let ids: Vec<String> = source
            .read()
            .unwrap()
            .iter()
            .map(|k| k.id().to_owned())
            .collect();
        assert_eq!(ids, [second.id(), first.id()]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_command_prints_the_keys() {
        let a = "33".repeat(32);
        let source = KeySource::Command(format!("echo {a}"));
        assert_eq!(
            source.read().unwrap()[0].id(),
            MasterKey::from_bytes([0x33; 32]).id()
        );
        let failing = KeySource::Command("echo nope >&2; exit 3".into());
        let err = failing.read().unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
