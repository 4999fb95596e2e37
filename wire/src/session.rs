//! Per-connection session state: the nonce, sequence counters and replay windows.

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::{
    Challenge, Envelope, MAX_DATAGRAM_LEN, Message, ReplayWindow, Unverified, Verified, WireError,
};

/// Sender id the server uses in its envelopes.
pub const SERVER_SENDER: [u8; 16] = [0xff; 16];

/// Checks everything a peer sends within one session: signature, session nonce, sender and
/// sequence number. Sequence numbers are recorded only after the signature verifies, so forged
/// envelopes cannot burn them.
#[derive(Debug)]
pub struct InboundSession {
    nonce: [u8; 16],
    window: ReplayWindow,
}

impl InboundSession {
    pub fn new(nonce: [u8; 16]) -> Self {
        Self {
            nonce,
            window: ReplayWindow::new(),
        }
    }

    /// Agent side: the first server envelope must be a challenge signed by the pinned server key;
    /// its header names the session nonce.
    pub fn from_challenge(
        env: Envelope<Unverified>,
        server_key: &VerifyingKey,
    ) -> Result<(Self, Challenge), WireError> {
        let mut session = Self::new(env.header().nonce);
        let verified = session.accept(env, &SERVER_SENDER, server_key)?;
        match verified.into_message() {
            Message::Challenge(c) => Ok((session, c)),
            other => Err(WireError::KindMismatch {
                header: other.kind() as u8,
                body: crate::MessageKind::Challenge as u8,
            }),
        }
    }

    pub fn nonce(&self) -> [u8; 16] {
        self.nonce
    }

    /// Accepts an envelope from a known peer.
    pub fn accept(
        &mut self,
        env: Envelope<Unverified>,
        sender: &[u8; 16],
        key: &VerifyingKey,
    ) -> Result<Envelope<Verified>, WireError> {
        self.precheck_from(&env, sender)?;
        let verified = env.verify_with(key)?;
        self.record_verified(&verified)?;
        Ok(verified)
    }

    /// The checks of [`accept`](Self::accept) that come before the signature, for a caller
    /// that has the signature verified elsewhere (batched) and then calls
    /// [`record_verified`](Self::record_verified): session nonce, replay window (read only),
    /// sender.
    pub fn precheck_from(
        &self,
        env: &Envelope<Unverified>,
        sender: &[u8; 16],
    ) -> Result<(), WireError> {
        self.precheck(env)?;
        if &env.header().sender != sender {
            return Err(WireError::WrongSender);
        }
        Ok(())
    }

    /// Accepts an enrolment request, verified against the key it carries.
    pub fn accept_enrol(
        &mut self,
        env: Envelope<Unverified>,
    ) -> Result<Envelope<Verified>, WireError> {
        self.precheck(&env)?;
        let seq = env.header().seq;
        let verified = env.verify_enrol()?;
        self.window.accept(seq)?;
        Ok(verified)
    }

    /// Records an envelope whose signature was checked elsewhere (batch verification).
    pub fn record_verified(&mut self, env: &Envelope<Verified>) -> Result<(), WireError> {
        if env.header().nonce != self.nonce {
            return Err(WireError::WrongSession);
        }
        self.window.accept(env.header().seq)
    }

    /// Cheap checks before any signature work.
    pub fn precheck(&self, env: &Envelope<Unverified>) -> Result<(), WireError> {
        if env.header().nonce != self.nonce {
            return Err(WireError::WrongSession);
        }
        self.window.check(env.header().seq)
    }
}

/// Signs what one side sends within a session.
#[derive(Debug)]
pub struct OutboundSession {
    sender: [u8; 16],
    nonce: [u8; 16],
    next_seq: u64,
    key: SigningKey,
}

impl OutboundSession {
    pub fn new(sender: [u8; 16], nonce: [u8; 16], key: SigningKey) -> Self {
        Self {
            sender,
            nonce,
            next_seq: 1,
            key,
        }
    }

    pub fn set_sender(&mut self, sender: [u8; 16]) {
        self.sender = sender;
    }

    /// Signs `message` with the next sequence number; `now_ms` is the caller's clock.
    pub fn seal(&mut self, message: Message, now_ms: u64) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        Envelope::seal(message, self.sender, self.nonce, seq, now_ms, &self.key).into_bytes()
    }

    /// Like [`seal`](Self::seal) but refuses messages too large for a QUIC datagram.
    pub fn seal_datagram(&mut self, message: Message, now_ms: u64) -> Result<Vec<u8>, WireError> {
        let bytes = self.seal(message, now_ms);
        if bytes.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::DatagramTooLarge {
                len: bytes.len(),
                max: MAX_DATAGRAM_LEN,
            });
        }
        Ok(bytes)
    }
}
