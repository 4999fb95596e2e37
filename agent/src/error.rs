//! The agent's error type.

use reap3r_wire::{CloseCode, WireError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Argument(String),
    #[error("identity store: {0}")]
    Store(String),
    #[error("this agent is not enrolled (no identity in {0})")]
    NotEnrolled(String),
    #[error("cannot reach server: {0}")]
    Connect(String),
    #[error("server does not match the pinned {0}")]
    Pin(&'static str),
    #[error("server refused: {code}: {reason}")]
    Refused { code: CloseCode, reason: String },
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server's QUIC endpoint refused the connection before any TLS: it is shutting down,
    /// or starting, so it is worth asking again soon.
    #[error("server refused the connection (restarting?)")]
    ConnectionRefused,
    #[error("protocol: {0}")]
    Protocol(#[from] WireError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::protocol::HandshakeError> for AgentError {
    fn from(err: crate::protocol::HandshakeError) -> Self {
        use crate::protocol::HandshakeError;
        match err {
            HandshakeError::ServerKey => Self::Pin("server key"),
            HandshakeError::Wire(e) => Self::Protocol(e),
            unexpected @ HandshakeError::Unexpected { .. } => Self::Refused {
                code: CloseCode::ProtocolError,
                reason: unexpected.to_string(),
            },
        }
    }
}
