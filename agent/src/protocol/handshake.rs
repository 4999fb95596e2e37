//! The opening of every connection, agent side: the server's signed `Challenge` (which names
//! the session nonce), the agent's `Hello` or `Enrol`, and the server's `Welcome` or
//! `EnrolResult`. Typestate: [`Challenged`] → [`Pending`] → [`Answer`]; a welcomed
//! connection becomes a [`Session`], which signs and verifies everything after it.
//!
//! Nothing here does I/O or reads a clock: frames come in as bytes, `now_ms` as an argument,
//! and what to send goes out as sealed bytes for the control stream.

use reap3r_wire::{
    Challenge, EnrolRequest, EnrolResult, Envelope, Hello, InboundSession, Message, MessageKind,
    OutboundSession, SERVER_SENDER, SigningKey, VerifyingKey, Welcome, WireError,
};

/// Why a handshake did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The challenge is not signed by the pinned server key: this is not our server.
    #[error("server does not match the pinned server key")]
    ServerKey,
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("expected {expected:?}, got {got:?}")]
    Unexpected {
        expected: MessageKind,
        got: MessageKind,
    },
}

/// Verifies server envelopes within one session: the pinned key, the server's sender id, the
/// session nonce and the replay window.
#[derive(Debug)]
pub struct ServerChannel {
    inbound: InboundSession,
    server_key: VerifyingKey,
}

impl ServerChannel {
    /// Verifies one server frame and returns its message.
    pub fn accept(&mut self, frame: Vec<u8>) -> Result<Message, WireError> {
        Ok(self
            .inbound
            .accept(Envelope::parse(frame)?, &SERVER_SENDER, &self.server_key)?
            .into_message())
    }

    pub fn nonce(&self) -> [u8; 16] {
        self.inbound.nonce()
    }
}

/// A connection whose first envelope was a challenge signed by the pinned server key.
#[derive(Debug)]
pub struct Challenged {
    channel: ServerChannel,
    challenge: Challenge,
}

impl Challenged {
    /// The first frame of a connection must be a `Challenge` signed by `server_key`.
    pub fn from_frame(frame: Vec<u8>, server_key: &VerifyingKey) -> Result<Self, HandshakeError> {
        let (inbound, challenge) =
            InboundSession::from_challenge(Envelope::parse(frame)?, server_key).map_err(
                |e| match e {
                    WireError::BadSignature => HandshakeError::ServerKey,
                    other => HandshakeError::Wire(other),
                },
            )?;
        Ok(Self {
            channel: ServerChannel {
                inbound,
                server_key: *server_key,
            },
            challenge,
        })
    }

    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    pub fn nonce(&self) -> [u8; 16] {
        self.channel.nonce()
    }

    /// The server side of this session, for a client that reads without saying hello.
    pub fn channel_mut(&mut self) -> &mut ServerChannel {
        &mut self.channel
    }

    /// A signer for this session as any sender with any key (for hostile test clients; an
    /// agent uses [`hello`](Self::hello) or [`enrol`](Self::enrol)).
    pub fn outbound(&self, sender: [u8; 16], key: &SigningKey) -> OutboundSession {
        OutboundSession::new(sender, self.nonce(), key.clone())
    }

    /// An enrolled agent introduces itself: returns the sealed `Hello` for the control stream.
    pub fn hello(
        self,
        agent_id: [u8; 16],
        key: &SigningKey,
        hello: Hello,
        now_ms: u64,
    ) -> (Vec<u8>, Pending) {
        self.open(
            agent_id,
            key,
            Message::Hello(hello),
            MessageKind::Welcome,
            now_ms,
        )
    }

    /// A new agent registers `request.public_key` (which must be `key`'s) with its token:
    /// returns the sealed `Enrol` for the control stream.
    pub fn enrol(self, key: &SigningKey, request: EnrolRequest, now_ms: u64) -> (Vec<u8>, Pending) {
        self.open(
            [0; 16],
            key,
            Message::Enrol(request),
            MessageKind::EnrolResult,
            now_ms,
        )
    }

    fn open(
        self,
        sender: [u8; 16],
        key: &SigningKey,
        message: Message,
        expect: MessageKind,
        now_ms: u64,
    ) -> (Vec<u8>, Pending) {
        let mut outbound = self.outbound(sender, key);
        let frame = outbound.seal(message, now_ms);
        let pending = Pending {
            channel: self.channel,
            outbound,
            expect,
        };
        (frame, pending)
    }
}

/// `Hello` or `Enrol` sent; waiting for the server's answer.
#[derive(Debug)]
pub struct Pending {
    channel: ServerChannel,
    outbound: OutboundSession,
    expect: MessageKind,
}

/// The server's answer to the opening.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per connection and taken apart at once"
)]
pub enum Answer {
    /// The hello was accepted: the session is live.
    Welcomed { session: Session, welcome: Welcome },
    /// The enrolment was accepted; the agent closes the connection and saves its identity.
    Enrolled(EnrolResult),
}

impl Pending {
    /// The server's next frame on the control stream: `Welcome` after a hello, `EnrolResult`
    /// after an enrolment; anything else fails the handshake.
    pub fn on_frame(mut self, frame: Vec<u8>) -> Result<Answer, HandshakeError> {
        match (self.expect, self.channel.accept(frame)?) {
            (MessageKind::Welcome, Message::Welcome(welcome)) => Ok(Answer::Welcomed {
                session: Session {
                    channel: self.channel,
                    outbound: self.outbound,
                },
                welcome,
            }),
            (MessageKind::EnrolResult, Message::EnrolResult(result)) => {
                Ok(Answer::Enrolled(result))
            }
            (expected, other) => Err(HandshakeError::Unexpected {
                expected,
                got: other.kind(),
            }),
        }
    }

    /// [`on_frame`](Self::on_frame) after a hello: the welcome and the live session.
    pub fn welcome(self, frame: Vec<u8>) -> Result<(Session, Welcome), HandshakeError> {
        match self.on_frame(frame)? {
            Answer::Welcomed { session, welcome } => Ok((session, welcome)),
            Answer::Enrolled(_) => Err(HandshakeError::Unexpected {
                expected: MessageKind::Welcome,
                got: MessageKind::EnrolResult,
            }),
        }
    }

    /// [`on_frame`](Self::on_frame) after an enrolment: the enrolment result.
    pub fn enrolled(self, frame: Vec<u8>) -> Result<EnrolResult, HandshakeError> {
        match self.on_frame(frame)? {
            Answer::Enrolled(result) => Ok(result),
            Answer::Welcomed { .. } => Err(HandshakeError::Unexpected {
                expected: MessageKind::EnrolResult,
                got: MessageKind::Welcome,
            }),
        }
    }

    /// The server side of this session, for a client that reads what it likes.
    pub fn channel_mut(&mut self) -> &mut ServerChannel {
        &mut self.channel
    }
}

/// A welcomed session: verifies what the server sends and signs what the agent sends, with
/// increasing sequence numbers across every lane.
#[derive(Debug)]
pub struct Session {
    channel: ServerChannel,
    outbound: OutboundSession,
}

impl Session {
    /// Verifies one server frame (any lane) and returns its message.
    pub fn accept(&mut self, frame: Vec<u8>) -> Result<Message, WireError> {
        self.channel.accept(frame)
    }

    /// Signs `message` with the next sequence number. Seal right before writing, so that no
    /// frame waits long with an old number while newer ones overtake it (the server's replay
    /// window is 128 numbers).
    pub fn seal(&mut self, message: Message, now_ms: u64) -> Vec<u8> {
        self.outbound.seal(message, now_ms)
    }

    /// Like [`seal`](Self::seal), refusing envelopes too large for a QUIC datagram.
    pub fn seal_datagram(&mut self, message: Message, now_ms: u64) -> Result<Vec<u8>, WireError> {
        self.outbound.seal_datagram(message, now_ms)
    }

    pub fn nonce(&self) -> [u8; 16] {
        self.channel.nonce()
    }

    pub fn channel_mut(&mut self) -> &mut ServerChannel {
        &mut self.channel
    }
}

#[cfg(test)]
mod tests {
    use super::super::rig::Server;
    use super::*;
    use reap3r_wire::{AgentConfig, Approval, InventorySummary};

    fn hello() -> Hello {
        Hello {
            agent_version: "t".into(),
            hostname: "h".into(),
            capabilities: vec!["heartbeat".into()],
            inventory: InventorySummary::default(),
            sealing_key: Some([5; 32]),
        }
    }

    /// Runs a hello handshake against `server`, whose answer is `answer`; renders the outcome.
    fn check(server: &mut Server, answer: impl FnOnce(&mut Server) -> Vec<u8>, expect: &str) {
        let got = (|| -> Result<String, HandshakeError> {
            let challenged = Challenged::from_frame(server.challenge(), &server.pinned())?;
            let (frame, pending) =
                challenged.hello(server.agent_id(), &server.agent_key(), hello(), 5);
            let sent = server.receive(&frame).map_err(HandshakeError::Wire)?;
            let reply = answer(server);
            Ok(match pending.on_frame(reply)? {
                Answer::Welcomed { session, welcome } => format!(
                    "sent {sent:?}; welcomed {}s nonce-ok={}",
                    welcome.config.heartbeat_interval_s,
                    session.nonce() == server.nonce()
                ),
                Answer::Enrolled(r) => format!("sent {sent:?}; enrolled {:?}", r.approval),
            })
        })();
        let got = got.unwrap_or_else(|e| format!("error: {e}"));
        assert_eq!(got, expect);
    }

    fn welcome(s: &mut Server) -> Vec<u8> {
        let agent_id = s.agent_id();
        s.seal(Message::Welcome(Welcome {
            agent_id,
            config: AgentConfig::default(),
            release_key: None,
        }))
    }

    #[test]
    fn hello_is_answered_by_welcome() {
        check(
            &mut Server::new(),
            welcome,
            "sent Hello; welcomed 30s nonce-ok=true",
        );
    }

    #[test]
    fn a_challenge_from_another_key_is_refused_before_anything_is_sent() {
        let mut server = Server::new();
        server.impostor();
        check(
            &mut server,
            welcome,
            "error: server does not match the pinned server key",
        );
    }

    #[test]
    fn a_welcome_that_is_not_signed_by_the_server_is_refused() {
        check(
            &mut Server::new(),
            |s| {
                s.impostor();
                welcome(s)
            },
            "error: signature does not verify",
        );
    }

    #[test]
    fn a_replayed_challenge_is_not_a_welcome() {
        check(
            &mut Server::new(),
            |s| s.challenge_again(),
            "error: sequence number 1 was already seen or is too old",
        );
    }

    #[test]
    fn hello_answered_by_another_kind_fails() {
        check(
            &mut Server::new(),
            |s| {
                s.seal(Message::EnrolResult(EnrolResult {
                    agent_id: [1; 16],
                    approval: Approval::Approved,
                }))
            },
            "error: expected Welcome, got EnrolResult",
        );
    }

    #[test]
    fn garbage_instead_of_a_challenge_is_a_wire_error() {
        let server = Server::new();
        let err = Challenged::from_frame(vec![7; 200], &server.pinned()).unwrap_err();
        assert!(matches!(err, HandshakeError::Wire(_)), "{err:?}");
    }

    #[test]
    fn enrolment_gets_its_result() {
        let mut server = Server::new();
        let challenged = Challenged::from_frame(server.challenge(), &server.pinned()).unwrap();
        let key = server.agent_key();
        let request = EnrolRequest {
            token: "r3t_x".into(),
            public_key: key.verifying_key().to_bytes(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "t".into(),
        };
        let (frame, pending) = challenged.enrol(&key, request, 1);
        assert_eq!(server.receive_enrol(&frame).unwrap(), MessageKind::Enrol);
        let reply = server.seal(Message::EnrolResult(EnrolResult {
            agent_id: [9; 16],
            approval: Approval::Pending,
        }));
        match pending.on_frame(reply).unwrap() {
            Answer::Enrolled(r) => {
                assert_eq!(r.agent_id, [9; 16]);
                assert_eq!(r.approval, Approval::Pending);
            }
            other => panic!("expected an enrolment result, got {other:?}"),
        }
    }
}
