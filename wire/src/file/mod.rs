//! File transfers on the wire: the server-signed grant that lets one transfer move one file to
//! or from one path on one agent, the messages of a transfer's channel ([`crate::Channel`]), and
//! the pure cores of both ends: [`FileReceiver`] (the agent for a push, the server for a pull)
//! and [`FileSender`] (the other one).
//!
//! A transfer's channel, either way:
//!
//! 1. S → A `FileOpen`: the signed grant, and for a pull the bytes the server holds already.
//! 2. A → S `FileReady`: where the sender starts (a push: what the agent's temporary file holds;
//!    a pull: the server's offset, within the file) and, for a pull, the file's size; or
//!    `FileAck::Failed` when the agent refuses (grant, path, a device file).
//! 3. Sender → receiver `FileChunk`s in order, each at most [`FILE_CHUNK_BYTES`] with the BLAKE3
//!    of its bytes, then `FileDone` with the whole file's size and BLAKE3.
//! 4. Receiver → sender `FileAck`: `Held` as the file grows (progress), `Resend` for a chunk that
//!    does not verify (the sender goes back there), then `Complete` once the whole file verified
//!    (and, on the agent, was renamed into place) or `Failed`.
//!
//! A cut transfer resumes on a new channel with a new grant for the same transfer: the receiver
//! keeps whole chunks only, so it always resumes at a chunk boundary, and it hashes what it kept
//! again so that the end's check covers the whole file.

mod receiver;
mod sender;

pub use receiver::{ChunkVerdict, DoneVerdict, FileMismatch, FileReceiver, Received};
pub use sender::{FileSender, SenderStep};

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
/// How often (in bytes held) a receiver reports its progress.
pub const FILE_PROGRESS_BYTES: u64 = 1024 * 1024;
/// Chunks a receiver refuses in one attempt before it fails the transfer (a link that corrupts
/// this much above QUIC's own checks is not one to finish a file on).
pub const MAX_FILE_RESENDS: u32 = 32;

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
    /// The most bytes per second the agent sends (a pull); 0: no limit.
    pub rate_limit: u64,
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
    /// A pull: the bytes the server holds already (it resumes there). A push: 0.
    pub offset: u64,
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

/// The agent's answer to an opener: where the sender starts (a chunk boundary) and, for a pull,
/// the file's size.
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
        let data = [5u8; 10];
        let grant = FileGrant {
            transfer_id: [1; 16],
            agent_id: AGENT,
            direction: FileDirection::Push,
            path: "/tmp/x".into(),
            size: Some(10),
            blake3: Some(*blake3::hash(&data).as_bytes()),
            max_bytes: 100,
            rate_limit: 0,
            issued_at_ms: 0,
            expires_at_ms: 1_000,
        };
        let open = |g: &FileGrant, key: &SigningKey| {
            let (grant, signature) = g.sign(key);
            FileOpen {
                channel: [2; 16],
                grant,
                signature: signature.to_vec(),
                offset: 0,
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
