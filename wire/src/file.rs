//! File transfers on the wire: the server-signed grant that lets one transfer move one file to
//! or from one path on one agent, the messages of a transfer's channel ([`crate::Channel`]), and
//! [`FileReceiver`], the pure core of whichever side receives (the agent for a push, the server
//! for a pull).
//!
//! A file moves in chunks of at most [`FILE_CHUNK_BYTES`], in order, each carrying the BLAKE3
//! of its bytes; the receiver refuses a chunk whose hash does not match (and the sender sends it
//! again), and at the end checks the whole file's BLAKE3 against what it was promised. A cut
//! transfer resumes: the receiver says how much it holds (`FileReady::offset`, a chunk boundary)
//! and the sender goes on from there.
//!
//! Not wired to an agent or the API yet: the transfer operations, the agent's writer and the
//! server's content-addressed store come next (issue 14).

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation for file grant signatures.
const FILE_GRANT_CONTEXT: &[u8] = b"reap3r file grant v1\0";

/// What an agent that moves files reports in its hello.
pub const FILE_CAPABILITY: &str = "file_transfer";
/// Most bytes in one chunk: a chunk and its envelope fit the channel frame cap with room.
pub const FILE_CHUNK_BYTES: usize = 32 * 1024;
/// Longest path in a grant, in bytes.
pub const MAX_FILE_PATH_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileDirection {
    /// Server → agent: the agent writes `path`.
    Push,
    /// Agent → server: the agent reads `path`.
    Pull,
}

/// The server's permission for one transfer of one file on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileGrant {
    pub transfer_id: [u8; 16],
    pub agent_id: [u8; 16],
    pub direction: FileDirection,
    /// Absolute path on the agent ([`check_path`]).
    pub path: String,
    /// Push: the file's size and BLAKE3, which the agent checks before it renames the file into
    /// place. Pull: `None`.
    pub size: Option<u64>,
    pub blake3: Option<[u8; 32]>,
    /// The most bytes the transfer may move (a pull of a larger file is refused).
    pub max_bytes: u64,
    pub issued_at_ms: u64,
    /// No transfer starts for this grant after this time (by the agent's clock, with slack).
    pub expires_at_ms: u64,
}

impl FileGrant {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn sign(&self, key: &SigningKey) -> (Vec<u8>, [u8; 64]) {
        let bytes = self.to_bytes();
        let signature = crate::grant::sign(FILE_GRANT_CONTEXT, &bytes, key);
        (bytes, signature)
    }
}

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("the path must be absolute")]
    NotAbsolute,
    #[error("the path may not contain `..`, `.` or empty components")]
    Traversal,
    #[error("the path may not contain NUL or control characters")]
    ControlCharacter,
    #[error("the path is longer than {MAX_FILE_PATH_BYTES} bytes")]
    TooLong,
}

/// A path a grant may name: absolute, at most [`MAX_FILE_PATH_BYTES`], no `.` or `..`
/// component (nothing to resolve: the path is the one the operator meant), no control
/// characters. Whether it is a regular file (and not a device, a FIFO or a socket) is the
/// agent's check when it opens it.
pub fn check_path(path: &str) -> Result<(), PathRefusal> {
    if path.len() > MAX_FILE_PATH_BYTES {
        return Err(PathRefusal::TooLong);
    }
    if path.chars().any(char::is_control) {
        return Err(PathRefusal::ControlCharacter);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathRefusal::NotAbsolute);
    };
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(PathRefusal::Traversal);
    }
    Ok(())
}

/// Why an agent refuses a transfer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefusal {
    #[error("file grant is not signed by the pinned server key")]
    BadSignature,
    #[error("file grant is for another agent")]
    WrongAgent,
    #[error("file grant expired")]
    Expired,
    #[error("file grant does not decode: {0}")]
    Malformed(String),
    #[error("{0}")]
    Path(#[from] PathRefusal),
}

/// S → A, the opener of a transfer's channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOpen {
    pub channel: [u8; 16],
    /// Postcard [`FileGrant`], as signed.
    pub grant: Vec<u8>,
    /// 64-byte Ed25519 signature over the grant.
    pub signature: Vec<u8>,
}

impl FileOpen {
    /// Agent side: the signature against the pinned server key, the agent id, the deadline
    /// (with `skew_ms` of slack), the path's shape and a push's promised size within the cap.
    pub fn verify(
        &self,
        server_key: &VerifyingKey,
        agent_id: &[u8; 16],
        now_ms: u64,
        skew_ms: u64,
    ) -> Result<FileGrant, FileRefusal> {
        if !crate::grant::verify(FILE_GRANT_CONTEXT, &self.grant, &self.signature, server_key) {
            return Err(FileRefusal::BadSignature);
        }
        let grant: FileGrant =
            postcard::from_bytes(&self.grant).map_err(|e| FileRefusal::Malformed(e.to_string()))?;
        if &grant.agent_id != agent_id {
            return Err(FileRefusal::WrongAgent);
        }
        if now_ms > grant.expires_at_ms.saturating_add(skew_ms) {
            return Err(FileRefusal::Expired);
        }
        check_path(&grant.path)?;
        let push_shape = grant.size.is_some() && grant.blake3.is_some();
        let pull_shape = grant.size.is_none() && grant.blake3.is_none();
        let fits = grant.size.is_none_or(|size| size <= grant.max_bytes);
        let shaped = match grant.direction {
            FileDirection::Push => push_shape && fits,
            FileDirection::Pull => pull_shape,
        };
        if !shaped {
            return Err(FileRefusal::Malformed(
                "a push names its size (within the cap) and hash; a pull names neither".into(),
            ));
        }
        Ok(grant)
    }
}

/// The receiver, at the start and after a cut: how much it holds (a chunk boundary) and, for a
/// pull, the file's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReady {
    pub offset: u64,
    pub size: Option<u64>,
}

/// One chunk at `offset`, with the BLAKE3 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    pub offset: u64,
    pub data: Vec<u8>,
    pub hash: [u8; 32],
}

impl FileChunk {
    pub fn new(offset: u64, data: Vec<u8>) -> Self {
        let hash = *blake3::hash(&data).as_bytes();
        Self { offset, data, hash }
    }
}

/// What the receiver decided about a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Store the chunk's bytes at its offset; everything below `acked` is now held.
    Write { offset: u64, acked: u64 },
    /// Refused: the sender goes on from `resend_from`.
    Resend {
        resend_from: u64,
        reason: &'static str,
    },
    /// A chunk that was held already (sent again after a resend); nothing to do.
    Duplicate,
}

/// Why the whole file is refused at the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileMismatch {
    #[error("the file is {got} bytes, not the {expected} promised")]
    Size { expected: u64, got: u64 },
    #[error("the file's BLAKE3 is not the one promised")]
    Hash,
    #[error("the file is larger than the transfer's cap of {0} bytes")]
    TooLarge(u64),
}

/// The receiving side of a transfer, pure: it takes chunks in order, checks each one's hash and
/// the size cap, hashes the whole file as it goes, and judges it at the end. The driver stores
/// the bytes it is told to and, after a cut, starts a new receiver with [`FileReceiver::resume`]
/// over the bytes it kept.
#[derive(Debug, Clone)]
pub struct FileReceiver {
    next: u64,
    cap: u64,
    expected: Option<(u64, [u8; 32])>,
    hasher: blake3::Hasher,
}

impl FileReceiver {
    /// A receiver from byte 0; `expected` is a push's promised size and hash.
    pub fn new(cap: u64, expected: Option<(u64, [u8; 32])>) -> Self {
        Self {
            next: 0,
            cap,
            expected,
            hasher: blake3::Hasher::new(),
        }
    }

    /// A receiver that already holds `held` (the file's first bytes, as kept before a cut); it
    /// keeps whole chunks only, so the resume starts at a chunk boundary. Returns it with how
    /// much of `held` it kept.
    pub fn resume(cap: u64, expected: Option<(u64, [u8; 32])>, held: &[u8]) -> (Self, u64) {
        let mut receiver = Self::new(cap, expected);
        let keep = held.len() - held.len() % FILE_CHUNK_BYTES;
        let keep = keep.min(usize::try_from(cap).unwrap_or(usize::MAX));
        receiver.hasher.update(&held[..keep]);
        receiver.next = keep as u64;
        (receiver, keep as u64)
    }

    /// Bytes held so far (where the next chunk starts).
    pub fn offset(&self) -> u64 {
        self.next
    }

    pub fn accept(&mut self, chunk: &FileChunk) -> ChunkVerdict {
        let len = chunk.data.len() as u64;
        let end = chunk.offset.saturating_add(len);
        if chunk.offset < self.next && end <= self.next {
            return ChunkVerdict::Duplicate;
        }
        let resend = |reason| ChunkVerdict::Resend {
            resend_from: self.next,
            reason,
        };
        if chunk.offset != self.next {
            return resend("the chunk does not start where the file stands");
        }
        if chunk.data.is_empty() || chunk.data.len() > FILE_CHUNK_BYTES {
            return resend("a chunk holds 1 to FILE_CHUNK_BYTES bytes");
        }
        if *blake3::hash(&chunk.data).as_bytes() != chunk.hash {
            return resend("the chunk's bytes do not match its hash");
        }
        if end > self.cap || self.expected.is_some_and(|(size, _)| end > size) {
            return resend("the chunk goes past the file's size");
        }
        self.hasher.update(&chunk.data);
        self.next = end;
        ChunkVerdict::Write {
            offset: chunk.offset,
            acked: end,
        }
    }

    /// The sender says it sent everything: the whole file is judged against what was promised
    /// (a push) or what the sender claims (a pull: its size and hash). Returns the file's hash.
    pub fn finish(&self, claimed: (u64, [u8; 32])) -> Result<[u8; 32], FileMismatch> {
        let (size, hash) = self.expected.unwrap_or(claimed);
        if self.next > self.cap {
            return Err(FileMismatch::TooLarge(self.cap));
        }
        if self.next != size || self.next != claimed.0 {
            return Err(FileMismatch::Size {
                expected: size,
                got: self.next,
            });
        }
        let got = *self.hasher.finalize().as_bytes();
        if got != hash || got != claimed.1 {
            return Err(FileMismatch::Hash);
        }
        Ok(got)
    }
}

/// The sender's last message: everything was sent; the file's size and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDone {
    pub size: u64,
    pub blake3: [u8; 32],
}

/// The receiver's answer to a chunk or to the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileAck {
    /// Everything below `offset` is held.
    Held { offset: u64 },
    /// Send again from `offset`, and why.
    Resend { offset: u64, reason: String },
    /// The whole file verified and is in place.
    Complete { blake3: [u8; 32] },
    /// The transfer failed, and why (path refused, disk full, hash mismatch).
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: [u8; 16] = [4; 16];

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn chunks(data: &[u8]) -> Vec<FileChunk> {
        data.chunks(FILE_CHUNK_BYTES)
            .enumerate()
            .map(|(i, c)| FileChunk::new((i * FILE_CHUNK_BYTES) as u64, c.to_vec()))
            .collect()
    }

    fn promise(data: &[u8]) -> (u64, [u8; 32]) {
        (data.len() as u64, *blake3::hash(data).as_bytes())
    }

    /// Feeds `chunks` to `r`; the verdicts as text.
    fn check(r: &mut FileReceiver, chunks: &[FileChunk]) -> Vec<String> {
        chunks
            .iter()
            .map(|c| match r.accept(c) {
                ChunkVerdict::Write { acked, .. } => format!("held {acked}"),
                ChunkVerdict::Resend { resend_from, .. } => format!("resend {resend_from}"),
                ChunkVerdict::Duplicate => "dup".into(),
            })
            .collect()
    }

    #[test]
    fn a_file_in_chunks_verifies_and_a_corrupted_chunk_is_sent_again() {
        let data = file(3 * FILE_CHUNK_BYTES + 100);
        let all = chunks(&data);
        let mut r = FileReceiver::new(1 << 30, Some(promise(&data)));
        let mut corrupt = all[1].clone();
        corrupt.data[7] ^= 1;
        let c = FILE_CHUNK_BYTES;
        assert_eq!(
            check(&mut r, &[all[0].clone(), corrupt, all[2].clone()]),
            [
                format!("held {c}"),
                format!("resend {c}"),
                format!("resend {c}")
            ]
        );
        // Sent again from the refused chunk; a repeat of a held chunk changes nothing.
        assert_eq!(
            check(
                &mut r,
                &[
                    all[1].clone(),
                    all[0].clone(),
                    all[2].clone(),
                    all[3].clone()
                ]
            ),
            [
                format!("held {}", 2 * c),
                "dup".into(),
                format!("held {}", 3 * c),
                format!("held {}", data.len())
            ]
        );
        assert_eq!(r.finish(promise(&data)), Ok(promise(&data).1));
    }

    #[test]
    fn a_cut_transfer_resumes_from_the_last_whole_chunk() {
        let data = file(5 * FILE_CHUNK_BYTES);
        let all = chunks(&data);
        // The receiver kept 2.5 chunks' worth when the link was cut.
        let held = &data[..2 * FILE_CHUNK_BYTES + FILE_CHUNK_BYTES / 2];
        let (mut r, from) = FileReceiver::resume(1 << 30, Some(promise(&data)), held);
        assert_eq!(from, 2 * FILE_CHUNK_BYTES as u64);
        for c in &all[2..] {
            assert!(matches!(r.accept(c), ChunkVerdict::Write { .. }));
        }
        assert!(r.finish(promise(&data)).is_ok());
    }

    #[test]
    fn a_wrong_whole_file_or_one_past_its_cap_is_refused() {
        let data = file(2 * FILE_CHUNK_BYTES);
        let all = chunks(&data);
        // Promised another file: every chunk is fine, the whole is not.
        let other = file(2 * FILE_CHUNK_BYTES + 1);
        let mut r = FileReceiver::new(1 << 30, Some((data.len() as u64, promise(&other).1)));
        check(&mut r, &all);
        assert_eq!(r.finish(promise(&data)), Err(FileMismatch::Hash));
        // A pull claims a size it did not send.
        let mut pull = FileReceiver::new(1 << 30, None);
        check(&mut pull, &all[..1]);
        assert!(matches!(
            pull.finish(promise(&data)),
            Err(FileMismatch::Size { .. })
        ));
        // A pull larger than the cap stops at the cap.
        let mut capped = FileReceiver::new(FILE_CHUNK_BYTES as u64, None);
        assert_eq!(
            check(&mut capped, &all),
            [
                format!("held {FILE_CHUNK_BYTES}"),
                format!("resend {FILE_CHUNK_BYTES}")
            ]
        );
        // Empty, oversized or misplaced chunks.
        let mut r = FileReceiver::new(1 << 30, None);
        let empty = FileChunk::new(0, vec![]);
        let big = FileChunk::new(0, vec![0; FILE_CHUNK_BYTES + 1]);
        let ahead = FileChunk::new(5, vec![1]);
        assert_eq!(check(&mut r, &[empty, big, ahead]), ["resend 0"; 3]);
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert_eq!(check_path("/etc/app/config.toml"), Ok(()));
        assert_eq!(check_path("etc/passwd"), Err(PathRefusal::NotAbsolute));
        for bad in ["/", "/tmp/../etc/shadow", "/tmp/./x", "/tmp//x", "/tmp/x/"] {
            assert_eq!(check_path(bad), Err(PathRefusal::Traversal), "{bad}");
        }
        assert_eq!(check_path("/tmp/a\0b"), Err(PathRefusal::ControlCharacter));
        assert_eq!(check_path("/tmp/a\nb"), Err(PathRefusal::ControlCharacter));
        let long = format!("/{}", "a".repeat(MAX_FILE_PATH_BYTES));
        assert_eq!(check_path(&long), Err(PathRefusal::TooLong));
    }

    #[test]
    fn grants_are_checked_like_every_grant() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let data = file(10);
        let grant = FileGrant {
            transfer_id: [1; 16],
            agent_id: AGENT,
            direction: FileDirection::Push,
            path: "/tmp/x".into(),
            size: Some(10),
            blake3: Some(promise(&data).1),
            max_bytes: 100,
            issued_at_ms: 0,
            expires_at_ms: 1_000,
        };
        let open = |g: &FileGrant, key: &SigningKey| {
            let (grant, signature) = g.sign(key);
            FileOpen {
                channel: [2; 16],
                grant,
                signature: signature.to_vec(),
            }
        };
        let verify = |o: &FileOpen, now| o.verify(&server.verifying_key(), &AGENT, now, 0);
        assert_eq!(verify(&open(&grant, &server), 1_000), Ok(grant.clone()));
        assert_eq!(
            verify(&open(&grant, &server), 1_001),
            Err(FileRefusal::Expired)
        );
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            verify(&open(&grant, &other), 0),
            Err(FileRefusal::BadSignature)
        );
        let foreign = FileGrant {
            agent_id: [5; 16],
            ..grant.clone()
        };
        assert_eq!(
            verify(&open(&foreign, &server), 0),
            Err(FileRefusal::WrongAgent)
        );
        let traversal = FileGrant {
            path: "/tmp/../etc/shadow".into(),
            ..grant.clone()
        };
        assert_eq!(
            verify(&open(&traversal, &server), 0),
            Err(FileRefusal::Path(PathRefusal::Traversal))
        );
        let over_cap = FileGrant {
            size: Some(101),
            ..grant.clone()
        };
        assert!(matches!(
            verify(&open(&over_cap, &server), 0),
            Err(FileRefusal::Malformed(_))
        ));
        let pull_with_hash = FileGrant {
            direction: FileDirection::Pull,
            ..grant
        };
        assert!(matches!(
            verify(&open(&pull_with_hash, &server), 0),
            Err(FileRefusal::Malformed(_))
        ));
    }
}
