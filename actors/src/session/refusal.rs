//! Why a session closes, as the agent will see it, and the checks on text an agent sends.

use reap3r_wire::{CloseCode, WireError};
use tracing::warn;

/// Longest string field accepted from an agent (hostnames, versions, tokens).
const MAX_TEXT: usize = 255;

/// Why a session is being closed, as the agent will see it.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) code: CloseCode,
    pub(super) reason: String,
}

impl Refusal {
    pub(super) fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    pub(super) fn internal(err: impl std::fmt::Display) -> Self {
        warn!(%err, "session internal error");
        Self::new(CloseCode::Internal, "internal server error")
    }
}

impl From<WireError> for Refusal {
    fn from(err: WireError) -> Self {
        let code = match err {
            WireError::BadSignature | WireError::BadKey => CloseCode::BadSignature,
            WireError::Replay(_) | WireError::WrongSession => CloseCode::Replay,
            WireError::FrameTooLarge { .. } | WireError::DatagramTooLarge { .. } => {
                CloseCode::FrameTooLarge
            }
            _ => CloseCode::ProtocolError,
        };
        Self::new(code, err.to_string())
    }
}

/// Text from an agent: bounded, and free of control characters.
pub(super) fn check_text(field: &str, value: &str) -> Result<(), Refusal> {
    if value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(Refusal::new(
            CloseCode::ProtocolError,
            format!("{field} is too long or has control characters"),
        ));
    }
    Ok(())
}
