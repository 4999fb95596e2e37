//! Remote shells on the wire: the server-signed grant that lets one operator open one shell on
//! one agent, and the messages of a shell's channel ([`crate::Channel`]).
//!
//! The server opens a stream and sends [`ShellOpen`] (the grant and its signature) as the
//! channel's opener; the agent checks the signature against the key it pinned at enrolment,
//! that the grant names itself, and that it has not expired, then answers [`ShellAck`] and
//! runs the shell on a PTY. Keystrokes ([`ShellInput`]) and window sizes ([`ShellResize`]) go to
//! the agent, output ([`ShellOutput`], numbered by byte offset) comes back, and [`ShellExit`]
//! ends it; [`ShellClose`] is the server ending it. A shell outlives a cut connection for a
//! grace period: the server opens a new channel with `resume_from`, and the agent sends what it
//! kept from that offset on.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation for shell grant signatures, so no other signed bytes pass as one.
const SHELL_GRANT_CONTEXT: &[u8] = b"reap3r shell grant v1\0";

/// What an agent that runs shells reports in its hello.
pub const SHELL_CAPABILITY: &str = "shell";
/// Most bytes of input or output in one shell message.
pub const MAX_SHELL_CHUNK: usize = 16 * 1024;
/// Largest terminal width or height accepted.
pub const MAX_SHELL_DIMENSION: u16 = 1000;
/// Longest operator name in a grant.
pub const MAX_OPERATOR_LEN: usize = 128;

/// The server's permission for one operator to run one shell on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellGrant {
    pub session_id: [u8; 16],
    pub agent_id: [u8; 16],
    /// Who opens it, as the audit names them (shown in the agent's log).
    pub operator: String,
    pub issued_at_ms: u64,
    /// The agent starts no shell for this grant after this time (by its clock, with slack).
    pub expires_at_ms: u64,
    /// The agent ends the shell this long after it started.
    pub max_duration_s: u32,
    /// The agent ends the shell after this long without input.
    pub idle_timeout_s: u32,
    /// How long the agent keeps the shell running after its channel is cut, for the server
    /// to reattach.
    pub reattach_grace_s: u32,
    /// The terminal's size at the start.
    pub cols: u16,
    pub rows: u16,
}

impl ShellGrant {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Signs the grant's bytes; returns them with the signature.
    pub fn sign(&self, key: &SigningKey) -> (Vec<u8>, [u8; 64]) {
        let bytes = self.to_bytes();
        let signature = crate::grant::sign(SHELL_GRANT_CONTEXT, &bytes, key);
        (bytes, signature)
    }
}

/// S → A, the opener of a shell channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOpen {
    /// The channel this stream is; its nonce derives from it ([`crate::channel_nonce`]).
    pub channel: [u8; 16],
    /// Postcard [`ShellGrant`], as signed.
    pub grant: Vec<u8>,
    /// 64-byte Ed25519 signature over the grant (any other length fails).
    pub signature: Vec<u8>,
    /// `None`: start the shell. `Some(offset)`: reattach to the running shell of this grant's
    /// session and send its output from `offset` on.
    pub resume_from: Option<u64>,
}

/// Why an agent refuses a shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellRefusal {
    #[error("shell grant is not signed by the pinned server key")]
    BadSignature,
    #[error("shell grant is for another agent")]
    WrongAgent,
    #[error("shell grant expired")]
    Expired,
    #[error("shell grant does not decode: {0}")]
    Malformed(String),
}

impl ShellOpen {
    /// Agent side: checks the signature against the pinned server key, that the grant names
    /// `agent_id`, and (for a new shell; a resume is checked against the running one) that it
    /// has not expired at `now_ms`, allowing `skew_ms` of clock difference.
    pub fn verify(
        &self,
        server_key: &VerifyingKey,
        agent_id: &[u8; 16],
        now_ms: u64,
        skew_ms: u64,
    ) -> Result<ShellGrant, ShellRefusal> {
        if !crate::grant::verify(
            SHELL_GRANT_CONTEXT,
            &self.grant,
            &self.signature,
            server_key,
        ) {
            return Err(ShellRefusal::BadSignature);
        }
        let grant: ShellGrant = postcard::from_bytes(&self.grant)
            .map_err(|e| ShellRefusal::Malformed(e.to_string()))?;
        if &grant.agent_id != agent_id {
            return Err(ShellRefusal::WrongAgent);
        }
        if self.resume_from.is_none() && now_ms > grant.expires_at_ms.saturating_add(skew_ms) {
            return Err(ShellRefusal::Expired);
        }
        let size = ShellResize {
            cols: grant.cols,
            rows: grant.rows,
        };
        if !size.is_valid() || grant.operator.len() > MAX_OPERATOR_LEN {
            return Err(ShellRefusal::Malformed(
                "terminal size or operator out of range".into(),
            ));
        }
        Ok(grant)
    }
}

/// A → S, the agent's answer to [`ShellOpen`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellAck {
    pub session_id: [u8; 16],
    pub outcome: ShellOpened,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShellOpened {
    /// A new shell runs; its process (and process group) id.
    Started { pid: u32 },
    /// Reattached; output follows from `offset` (later than asked when the agent no longer
    /// holds the bytes in between).
    Resumed { offset: u64 },
    /// No shell, and why (bad grant, unknown session, limit reached, no PTY).
    Refused(String),
}

/// S → A: keystrokes, as the terminal sends them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellInput {
    pub data: Vec<u8>,
}

/// S → A: the terminal's new size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellResize {
    pub cols: u16,
    pub rows: u16,
}

impl ShellResize {
    /// What a size out of range is told.
    pub const OUT_OF_RANGE: &'static str = "cols and rows must be 1 to 1000";

    /// Whether the size is one a terminal can have.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_SHELL_DIMENSION).contains(&self.cols)
            && (1..=MAX_SHELL_DIMENSION).contains(&self.rows)
    }
}

/// A → S: what the shell wrote, at byte `offset` of its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOutput {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A → S: the shell ended (its process exited, or the agent ended it), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellExit {
    pub exit_code: Option<i32>,
    pub reason: String,
    /// Bytes of output in all.
    pub output_bytes: u64,
}

/// S → A: end the shell (the operator closed it, or a limit ended it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellClose {
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: [u8; 16] = [4; 16];

    fn grant() -> ShellGrant {
        ShellGrant {
            session_id: [1; 16],
            agent_id: AGENT,
            operator: "user:alice".into(),
            issued_at_ms: 1_000,
            expires_at_ms: 61_000,
            max_duration_s: 3600,
            idle_timeout_s: 900,
            reattach_grace_s: 60,
            cols: 80,
            rows: 24,
        }
    }

    fn open(grant: &ShellGrant, key: &SigningKey, resume_from: Option<u64>) -> ShellOpen {
        let (grant, signature) = grant.sign(key);
        ShellOpen {
            channel: [2; 16],
            grant,
            signature: signature.to_vec(),
            resume_from,
        }
    }

    /// The verdict on `o` at `now_ms`, with 5 s of skew allowed.
    fn check(o: &ShellOpen, server: &SigningKey, now_ms: u64) -> Result<ShellGrant, ShellRefusal> {
        o.verify(&server.verifying_key(), &AGENT, now_ms, 5_000)
    }

    #[test]
    fn a_signed_grant_for_this_agent_verifies_until_it_expires() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let o = open(&grant(), &server, None);
        assert_eq!(check(&o, &server, 2_000).unwrap(), grant());
        assert!(check(&o, &server, 66_000).is_ok(), "within the skew");
        assert_eq!(check(&o, &server, 66_001), Err(ShellRefusal::Expired));
        // A resume is judged against the running shell, not the opening deadline.
        let resume = open(&grant(), &server, Some(10));
        assert!(check(&resume, &server, 10_000_000).is_ok());
    }

    #[test]
    fn forged_foreign_or_malformed_grants_are_refused() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            check(&open(&grant(), &other, None), &server, 0),
            Err(ShellRefusal::BadSignature)
        );
        let mut tampered = open(&grant(), &server, None);
        let mut g = grant();
        g.max_duration_s = u32::MAX;
        tampered.grant = g.to_bytes();
        assert_eq!(
            check(&tampered, &server, 0),
            Err(ShellRefusal::BadSignature)
        );
        let mut short = open(&grant(), &server, None);
        short.signature.truncate(10);
        assert_eq!(check(&short, &server, 0), Err(ShellRefusal::BadSignature));
        let foreign = ShellGrant {
            agent_id: [5; 16],
            ..grant()
        };
        assert_eq!(
            check(&open(&foreign, &server, None), &server, 0),
            Err(ShellRefusal::WrongAgent)
        );
        let huge = ShellGrant {
            cols: MAX_SHELL_DIMENSION + 1,
            ..grant()
        };
        assert!(matches!(
            check(&open(&huge, &server, None), &server, 0),
            Err(ShellRefusal::Malformed(_))
        ));
        // Signed bytes that are not a grant.
        let key = server.clone();
        let junk = ShellOpen {
            signature: crate::grant::sign(SHELL_GRANT_CONTEXT, b"\xff", &key).to_vec(),
            grant: b"\xff".to_vec(),
            ..open(&grant(), &server, None)
        };
        assert!(matches!(
            check(&junk, &server, 0),
            Err(ShellRefusal::Malformed(_))
        ));
    }

    #[test]
    fn a_job_grant_signature_does_not_pass_as_a_shell_grant() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let bytes = grant().to_bytes();
        let o = ShellOpen {
            channel: [2; 16],
            signature: crate::grant::sign(crate::job::GRANT_CONTEXT, &bytes, &server).to_vec(),
            grant: bytes,
            resume_from: None,
        };
        assert_eq!(check(&o, &server, 0), Err(ShellRefusal::BadSignature));
    }

    #[test]
    fn resizes_are_bounded() {
        assert!(ShellResize { cols: 80, rows: 24 }.is_valid());
        assert!(ShellResize::OUT_OF_RANGE.ends_with(&MAX_SHELL_DIMENSION.to_string()));
        assert!(!ShellResize { cols: 0, rows: 24 }.is_valid());
        assert!(
            !ShellResize {
                cols: 80,
                rows: MAX_SHELL_DIMENSION + 1
            }
            .is_valid()
        );
    }
}
