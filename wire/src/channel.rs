//! Channels: a server-opened stream with a sequence space of its own (remote shells, and file
//! transfers after them).
//!
//! Every envelope of a connection shares one sequence space and one 128-number replay window
//! per direction. A busy stream breaks that: frames sealed for a stream whose QUIC send buffer
//! is full wait there while heartbeats sealed later overtake them, and once they lag more than
//! 128 numbers behind, the receiver refuses them as replays and closes the connection (a shell
//! printing small lines can have thousands of frames in flight). A channel's envelopes carry a
//! nonce of their own, derived from the connection's nonce and a channel id the server picks,
//! and their own sequence numbers from 1; QUIC delivers a stream in order, so the window never
//! sees them reordered.
//!
//! What still holds for a channel: its frames are signed by the same keys as the connection's
//! (server key one way, the agent's key the other); the derived nonce binds them to this
//! connection (a frame from another connection, or another channel, is `WrongSession`); the
//! opener names its channel id in its signed body, and the nonce must be the one derived from
//! it ([`Channel::accept_open`]).

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::{Envelope, InboundSession, Message, OutboundSession, SERVER_SENDER, WireError};

/// Domain separation for channel nonces (BLAKE3 `derive_key` context).
const CHANNEL_CONTEXT: &str = "reap3r channel nonce v1";

/// The nonce of channel `channel` on the connection whose session nonce is `session_nonce`.
pub fn channel_nonce(session_nonce: &[u8; 16], channel: &[u8; 16]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new_derive_key(CHANNEL_CONTEXT);
    hasher.update(session_nonce);
    hasher.update(channel);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    nonce
}

/// One side of a channel: signs what it sends, verifies what the peer sends.
#[derive(Debug)]
pub struct Channel {
    id: [u8; 16],
    inbound: InboundSession,
    outbound: OutboundSession,
    peer: [u8; 16],
    peer_key: VerifyingKey,
}

impl Channel {
    /// Server side: channel `id` on the connection with `session_nonce`, to `agent_id`, whose
    /// frames must verify with `agent_key`.
    pub fn open(
        session_nonce: &[u8; 16],
        id: [u8; 16],
        agent_id: [u8; 16],
        agent_key: VerifyingKey,
        server_key: SigningKey,
    ) -> Self {
        let nonce = channel_nonce(session_nonce, &id);
        Self {
            id,
            inbound: InboundSession::new(nonce),
            outbound: OutboundSession::new(SERVER_SENDER, nonce, server_key),
            peer: agent_id,
            peer_key: agent_key,
        }
    }

    /// Agent side: the first frame of a stream the server opened on the connection with
    /// `session_nonce`. It must be signed by the pinned server key, carry sequence number 1 and
    /// open a channel ([`Message::channel_id`]) whose derived nonce is the one in its header.
    /// Returns the channel (signing as `agent_id` with `agent_key`) and the opener.
    pub fn accept_open(
        frame: Vec<u8>,
        session_nonce: &[u8; 16],
        server_key: &VerifyingKey,
        agent_id: [u8; 16],
        agent_key: SigningKey,
    ) -> Result<(Self, Message), WireError> {
        let env = Envelope::parse(frame)?;
        let nonce = env.header().nonce;
        if env.header().seq != 1 {
            return Err(WireError::Replay(env.header().seq));
        }
        let mut inbound = InboundSession::new(nonce);
        let message = inbound
            .accept(env, &SERVER_SENDER, server_key)?
            .into_message();
        let id = message.channel_id().ok_or(WireError::KindMismatch {
            header: message.kind() as u8,
            body: message.kind() as u8,
        })?;
        if channel_nonce(session_nonce, &id) != nonce {
            return Err(WireError::WrongSession);
        }
        Ok((
            Self {
                id,
                inbound,
                outbound: OutboundSession::new(agent_id, nonce, agent_key),
                peer: SERVER_SENDER,
                peer_key: *server_key,
            },
            message,
        ))
    }

    /// The channel id the server picked.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// Signs `message` with the channel's next sequence number.
    pub fn seal(&mut self, message: Message, now_ms: u64) -> Vec<u8> {
        self.outbound.seal(message, now_ms)
    }

    /// Verifies one frame the peer sent on the channel.
    pub fn accept(&mut self, frame: Vec<u8>) -> Result<Message, WireError> {
        Ok(self
            .inbound
            .accept(Envelope::parse(frame)?, &self.peer, &self.peer_key)?
            .into_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ShellInput, ShellOpen};

    const AGENT: [u8; 16] = [4; 16];
    const NONCE: [u8; 16] = [9; 16];
    const ID: [u8; 16] = [5; 16];

    fn keys() -> (SigningKey, SigningKey) {
        (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        )
    }

    fn opener(id: [u8; 16]) -> Message {
        Message::ShellOpen(ShellOpen {
            channel: id,
            grant: vec![],
            signature: vec![],
            resume_from: None,
        })
    }

    /// Opens a channel both ways: the server's half and the agent's, through the opener.
    fn pair() -> (Channel, Channel) {
        let (server, agent) = keys();
        let mut s = Channel::open(&NONCE, ID, AGENT, agent.verifying_key(), server.clone());
        let first = s.seal(opener(ID), 0);
        let (a, _) =
            Channel::accept_open(first, &NONCE, &server.verifying_key(), AGENT, agent).unwrap();
        (s, a)
    }

    fn input(data: &[u8]) -> Message {
        Message::ShellInput(ShellInput {
            data: data.to_vec(),
        })
    }

    #[test]
    fn frames_flow_both_ways_each_accepted_once() {
        let (mut s, mut a) = pair();
        let to_agent = s.seal(input(b"ls\n"), 1);
        assert_eq!(a.accept(to_agent.clone()).unwrap(), input(b"ls\n"));
        assert_eq!(a.accept(to_agent), Err(WireError::Replay(2)));
        let to_server = a.seal(input(b"out"), 1);
        assert_eq!(s.accept(to_server).unwrap(), input(b"out"));
        assert_eq!(a.id(), ID);
    }

    #[test]
    fn an_opener_for_another_connection_or_channel_is_refused() {
        let (server, agent) = keys();
        let key = server.verifying_key();
        let mut s = Channel::open(&NONCE, ID, AGENT, agent.verifying_key(), server.clone());
        let first = s.seal(opener(ID), 0);
        // Another connection's nonce derives another channel nonce.
        let other = Channel::accept_open(first.clone(), &[8; 16], &key, AGENT, agent.clone());
        assert_eq!(other.unwrap_err(), WireError::WrongSession);
        // The body names another channel than the one the nonce was derived from.
        let mut lying = Channel::open(&NONCE, ID, AGENT, agent.verifying_key(), server.clone());
        let first = lying.seal(opener([6; 16]), 0);
        let err = Channel::accept_open(first, &NONCE, &key, AGENT, agent.clone()).unwrap_err();
        assert_eq!(err, WireError::WrongSession);
        // Not signed by the server key.
        let mut forged = Channel::open(&NONCE, ID, AGENT, agent.verifying_key(), agent.clone());
        let first = forged.seal(opener(ID), 0);
        let err = Channel::accept_open(first, &NONCE, &key, AGENT, agent.clone()).unwrap_err();
        assert_eq!(err, WireError::BadSignature);
        // Not the first frame of its channel.
        let mut s = Channel::open(&NONCE, ID, AGENT, agent.verifying_key(), server);
        let _ = s.seal(opener(ID), 0);
        let second = s.seal(opener(ID), 0);
        let err = Channel::accept_open(second, &NONCE, &key, AGENT, agent.clone()).unwrap_err();
        assert_eq!(err, WireError::Replay(2));
        // A message that opens no channel.
        let mut s = Channel::open(&NONCE, ID, AGENT, agent.verifying_key(), keys().0);
        let first = s.seal(input(b"x"), 0);
        assert!(matches!(
            Channel::accept_open(first, &NONCE, &key, AGENT, agent),
            Err(WireError::KindMismatch { .. })
        ));
    }

    #[test]
    fn frames_of_one_channel_do_not_pass_on_another() {
        let (mut s1, _a1) = pair();
        let (server, agent) = keys();
        let mut s2 = Channel::open(
            &NONCE,
            [7; 16],
            AGENT,
            agent.verifying_key(),
            server.clone(),
        );
        let first = s2.seal(opener([7; 16]), 0);
        let (mut a2, _) =
            Channel::accept_open(first, &NONCE, &server.verifying_key(), AGENT, agent).unwrap();
        let _ = s1.seal(input(b"a"), 0);
        let from_one = s1.seal(input(b"b"), 0);
        assert_eq!(a2.accept(from_one), Err(WireError::WrongSession));
    }

    #[test]
    fn a_channel_frame_overtaken_by_hundreds_of_connection_frames_still_passes() {
        let (_, agent) = keys();
        let (mut s, mut a) = pair();
        // The connection's own sequence space, on the same keys and nonce.
        let mut conn_out = OutboundSession::new(AGENT, NONCE, agent.clone());
        let mut conn_in = InboundSession::new(NONCE);
        // A frame waits in a full send buffer while 300 later ones overtake it.
        let waiting_on_channel = a.seal(input(b"late"), 0);
        let waiting_on_connection = conn_out.seal(input(b"late"), 0);
        for i in 0..300u32 {
            let frame = conn_out.seal(input(&i.to_be_bytes()), 0);
            let env = Envelope::parse(frame).unwrap();
            conn_in.accept(env, &AGENT, &agent.verifying_key()).unwrap();
        }
        // On the connection's window it is now a replay; on its channel it is simply next.
        let env = Envelope::parse(waiting_on_connection).unwrap();
        assert_eq!(
            conn_in
                .accept(env, &AGENT, &agent.verifying_key())
                .unwrap_err(),
            WireError::Replay(1)
        );
        assert_eq!(s.accept(waiting_on_channel).unwrap(), input(b"late"));
    }
}
