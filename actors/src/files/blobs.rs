//! The server's file store: files named by their BLAKE3 in the data dir (`files/ab/abcd…`), kept
//! once however many organisations or transfers hold them; uploads are written to `incoming/`
//! and renamed into place once their hash is known, pulls are received into `partial/` (kept
//! across a cut, for the resume) and renamed into place once verified.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reap3r_store::Uuid;
use tokio::io::AsyncWriteExt;

/// An upload whose body sends nothing for this long is dropped (a stalled client must not hold
/// a file and a task open forever).
pub const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the file is larger than the {0}-byte cap")]
    TooLarge(u64),
    #[error("the upload was cut: {0}")]
    Body(String),
    #[error("the server cannot store the file: {0}")]
    Io(#[from] io::Error),
}

/// Whether `text` is a BLAKE3 as the store names files: 64 lowercase hex digits.
pub fn is_blake3_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl BlobStore {
    /// The store under `root` (created, private to the server's user).
    pub fn open(root: &Path) -> io::Result<Self> {
        for dir in [
            root.to_path_buf(),
            root.join("incoming"),
            root.join("partial"),
        ] {
            private_dir(&dir)?;
        }
        // An upload cut by a crash left its bytes here; nothing refers to them.
        for entry in std::fs::read_dir(root.join("incoming"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Where the file with this BLAKE3 (hex) lives.
    pub fn path_of(&self, blake3_hex: &str) -> PathBuf {
        self.root.join(&blake3_hex[..2]).join(blake3_hex)
    }

    /// Where a pull's bytes are received.
    pub fn partial_path(&self, transfer: Uuid) -> PathBuf {
        self.root.join("partial").join(transfer.to_string())
    }

    /// Stores an upload of at most `cap` bytes; returns its BLAKE3 (hex) and size.
    pub async fn put<S, E>(&self, mut body: S, cap: u64) -> Result<(String, u64), PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let incoming = self.root.join("incoming").join(Uuid::new_v4().to_string());
        let result = async {
            let mut file = tokio::fs::File::create(&incoming).await?;
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            loop {
                let next = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, body.next())
                    .await
                    .map_err(|_| {
                        PutError::Body(format!(
                            "nothing arrived for {} s",
                            UPLOAD_IDLE_TIMEOUT.as_secs()
                        ))
                    })?;
                let Some(piece) = next else { break };
                let piece = piece.map_err(|e| PutError::Body(e.to_string()))?;
                size += piece.len() as u64;
                if size > cap {
                    return Err(PutError::TooLarge(cap));
                }
                hasher.update(&piece);
                file.write_all(&piece).await?;
            }
            // tokio's `sync_all` does not report the error of a write still in flight:
            // flush first, so a full disk fails the upload instead of storing it cut.
            file.flush().await?;
            file.sync_all().await?;
            let hex = hasher.finalize().to_hex().to_string();
            self.place(&incoming, &hex).await?;
            Ok((hex, size))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&incoming).await;
        }
        result
    }

    /// Moves a verified pull into place under its BLAKE3 (hex).
    pub async fn commit_partial(&self, transfer: Uuid, blake3_hex: &str) -> io::Result<()> {
        self.place(&self.partial_path(transfer), blake3_hex).await
    }

    /// Whether the file named `blake3_hex` is there with `size` bytes.
    async fn holds(&self, blake3_hex: &str, size: u64) -> io::Result<bool> {
        match tokio::fs::metadata(self.path_of(blake3_hex)).await {
            Ok(meta) => Ok(meta.is_file() && meta.len() == size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn remove_partial(&self, transfer: Uuid) {
        let _ = tokio::fs::remove_file(self.partial_path(transfer)).await;
    }

    /// Renames `from` to the file named `blake3_hex` (the same bytes may be there already:
    /// then `from` goes; a file there of another size — cut by a crash — is replaced), and
    /// syncs the directory so the name survives a crash.
    async fn place(&self, from: &Path, blake3_hex: &str) -> io::Result<()> {
        let to = self.path_of(blake3_hex);
        let size = tokio::fs::metadata(from).await?.len();
        if self.holds(blake3_hex, size).await? {
            return tokio::fs::remove_file(from).await;
        }
        let Some(dir) = to.parent() else {
            return Err(io::Error::other("a file store path without a directory"));
        };
        private_dir(dir)?;
        tokio::fs::rename(from, &to).await?;
        tokio::fs::File::open(dir).await?.sync_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pieces: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(
            pieces
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn files_are_stored_once_under_their_hash_and_oversized_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (hex, size) = store.put(body(&[b"hello ", b"world"]), 100).await.unwrap();
        assert_eq!(hex, blake3::hash(b"hello world").to_hex().to_string());
        assert_eq!(size, 11);
        assert_eq!(std::fs::read(store.path_of(&hex)).unwrap(), b"hello world");
        // The same bytes again: one file.
        let (again, _) = store.put(body(&[b"hello world"]), 100).await.unwrap();
        assert_eq!(again, hex);
        let too_big = store.put(body(&[b"0123456789", b"x"]), 10).await;
        assert!(
            matches!(too_big, Err(PutError::TooLarge(10))),
            "{too_big:?}"
        );
        let cut = futures::stream::iter(vec![Ok(Bytes::from_static(b"ab")), Err("reset")]);
        assert!(matches!(store.put(cut, 10).await, Err(PutError::Body(_))));
        let incoming = std::fs::read_dir(dir.path().join("incoming")).unwrap();
        assert_eq!(incoming.count(), 0, "refused uploads leave no bytes behind");
        assert!(is_blake3_hex(&hex));
        assert!(!is_blake3_hex("../../etc/passwd"));
        assert!(!is_blake3_hex(&hex.to_uppercase()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stalls_is_dropped_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let stalled = futures::stream::iter(vec![Ok::<_, String>(Bytes::from_static(b"ab"))])
            .chain(futures::stream::pending());
        let got = store.put(Box::pin(stalled), 100).await;
        assert!(
            matches!(&got, Err(PutError::Body(why)) if why.contains("nothing arrived")),
            "{got:?}"
        );
        let incoming = std::fs::read_dir(dir.path().join("incoming")).unwrap();
        assert_eq!(incoming.count(), 0);
    }
}
