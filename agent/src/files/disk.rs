//! What the writer and the reader share about files on disk: what kind of file something is (in
//! words, for a refusal the operator reads), hashing a file's first bytes in pieces, positioned
//! reads and writes, and running that blocking work off the async runtime (the agent runs on a
//! single thread: a slow disk must not hold up heartbeats, jobs or shells).

use std::fs::{File, FileType};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};

/// Bytes read at a time when hashing a file: a file of any size is hashed in bounded memory.
pub(super) const HASH_PIECE_BYTES: usize = 256 * 1024;

/// What a file is, with its article, as in "/dev/null is a character device".
pub(super) fn kind(file_type: FileType) -> &'static str {
    use rustix::fs::FileType as T;
    let file_type = if file_type.is_file() {
        T::RegularFile
    } else if file_type.is_dir() {
        T::Directory
    } else if file_type.is_symlink() {
        T::Symlink
    } else if file_type.is_block_device() {
        T::BlockDevice
    } else if file_type.is_char_device() {
        T::CharacterDevice
    } else if file_type.is_fifo() {
        T::Fifo
    } else if file_type.is_socket() {
        T::Socket
    } else {
        T::Unknown
    };
    kind_of(file_type)
}

/// [`kind`] of a file looked at by descriptor (a `stat`'s mode).
pub(super) fn kind_of(file_type: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType as T;
    match file_type {
        T::RegularFile => "a regular file",
        T::Directory => "a directory",
        T::Symlink => "a symbolic link",
        T::BlockDevice => "a block device",
        T::CharacterDevice => "a character device",
        T::Fifo => "a FIFO",
        T::Socket => "a socket",
        T::Unknown => "a special file",
    }
}

/// BLAKE3 over the first `len` bytes of `file`, read in pieces of [`HASH_PIECE_BYTES`].
/// `go_on` is asked before each piece; false abandons the work (its transfer is gone, and a
/// file of gigabytes need not be read to the end for nobody). A file shorter than `len` is an
/// `UnexpectedEof` error: it shrank.
pub(super) fn hash_prefix(
    file: &File,
    len: u64,
    mut go_on: impl FnMut() -> bool,
) -> io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    let mut piece = vec![0u8; HASH_PIECE_BYTES];
    let mut at = 0u64;
    while at < len {
        if !go_on() {
            return Err(io::Error::other("abandoned"));
        }
        let want = (len - at).min(HASH_PIECE_BYTES as u64) as usize;
        let n = match file.read_at(&mut piece[..want], at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than it was",
                ));
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&piece[..n]);
        at += n as u64;
    }
    Ok(hasher)
}

/// Exactly `len` bytes of `file` from `offset`; `UnexpectedEof` if the file ends before.
pub(super) fn read_range(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}

/// Writes all of `bytes` at `offset` (a positioned write: chunks land where they belong
/// whatever was written before).
pub(super) fn write_range(file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    file.write_all_at(bytes, offset)
}

/// Runs blocking file work on tokio's blocking pool and waits for it.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) => Err(format!("the file work did not finish: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_prefix_hash_matches_the_bytes_and_a_short_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..HASH_PIECE_BYTES * 2 + 77)
            .map(|i| (i % 251) as u8)
            .collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let file = File::open(&path).unwrap();
        let len = HASH_PIECE_BYTES as u64 + 5;
        let hasher = hash_prefix(&file, len, || true).unwrap();
        assert_eq!(hasher.finalize(), blake3::hash(&data[..len as usize]));
        let err = hash_prefix(&file, data.len() as u64 + 1, || true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // Abandoned before the second piece.
        let mut pieces = 0;
        let abandoned = hash_prefix(&file, data.len() as u64, || {
            pieces += 1;
            pieces < 2
        });
        assert!(abandoned.is_err());
        assert_eq!(pieces, 2);
    }

    #[test]
    fn kinds_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            kind(std::fs::metadata(dir.path()).unwrap().file_type()),
            "a directory"
        );
        assert_eq!(
            kind(std::fs::metadata("/dev/null").unwrap().file_type()),
            "a character device"
        );
    }
}
