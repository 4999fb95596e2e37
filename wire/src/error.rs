//! The one error type of the wire layer.

use thiserror::Error;

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("envelope of {len} bytes is shorter than the minimum {min}")]
    Truncated { len: usize, min: usize },
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("message body does not decode: {0}")]
    Body(String),
    #[error("message kind in header ({header}) does not match body ({body})")]
    KindMismatch { header: u8, body: u8 },
    #[error("signature does not verify")]
    BadSignature,
    #[error("public key is not a valid Ed25519 key")]
    BadKey,
    #[error("envelope is for another session")]
    WrongSession,
    #[error("envelope sender does not match the session")]
    WrongSender,
    #[error("sequence number {0} was already seen or is too old")]
    Replay(u64),
    #[error("message does not fit in a datagram ({len} > {max})")]
    DatagramTooLarge { len: usize, max: usize },
}
