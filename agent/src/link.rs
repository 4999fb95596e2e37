//! One live connection as the rest of the agent sees it: the QUIC connection and its id in the
//! protocol core, which holds the session (signing, verification) and the job rules, shared by
//! the control loop and the job streams.
//!
//! Every frame is sealed right before it is written, so no frame waits long with an old sequence
//! number while newer ones overtake it (the server's replay window is 128 numbers).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use quinn::Connection;
use reap3r_wire::Message;

use crate::AgentError;
use crate::jobs::LedgerStore;
use crate::protocol::{AgentCore, ConnId, Effect, FrameError, Lane};
use crate::transport::{connection_error, write_frame};

/// The agent's protocol core, over its redb ledger.
pub(crate) type Core = AgentCore<LedgerStore>;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
pub(crate) struct Link {
    conn: Connection,
    id: ConnId,
    core: Arc<Mutex<Core>>,
}

impl Link {
    pub(crate) fn new(conn: Connection, id: ConnId, core: Arc<Mutex<Core>>) -> Self {
        Self { conn, id, core }
    }

    pub(crate) fn id(&self) -> ConnId {
        self.id
    }

    /// Signs `message` with the session's next sequence number; `None` once this connection is
    /// no longer the live one.
    pub(crate) fn seal(&self, message: Message) -> Option<Vec<u8>> {
        lock(&self.core).seal(self.id, message, now_ms())
    }

    pub(crate) fn seal_datagram(&self, message: Message) -> Result<Vec<u8>, AgentError> {
        match lock(&self.core).seal_datagram(self.id, message, now_ms()) {
            Some(sealed) => Ok(sealed?),
            None => Err(AgentError::Lost("the session ended".into())),
        }
    }

    /// The session nonce of this connection (channels derive theirs from it); `None` once it
    /// is no longer the live one.
    pub(crate) fn session_nonce(&self) -> Option<[u8; 16]> {
        lock(&self.core).session_nonce(self.id)
    }

    /// A frame the server sent on the control stream, through the core.
    pub(crate) fn on_control(&self, frame: Vec<u8>) -> Result<Vec<Effect>, FrameError> {
        lock(&self.core).on_frame(self.id, Lane::Control, frame, now_ms())
    }

    /// Results still unacknowledged on this connection long after they were sent, to send
    /// again (see `AgentCore::resend_due`).
    pub(crate) fn resend_due(&self) -> Vec<Message> {
        lock(&self.core)
            .resend_due(now_ms())
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Send { conn, message, .. } if conn == self.id => Some(message),
                _ => None,
            })
            .collect()
    }

    /// Sends one message on a new uni stream: the stream is opened first (which may wait for
    /// the server's stream credit), then the message is sealed and written.
    pub(crate) async fn send_uni(&self, message: Message) -> Result<(), AgentError> {
        let mut stream = self.conn.open_uni().await.map_err(connection_error)?;
        let frame = self
            .seal(message)
            .ok_or_else(|| AgentError::Lost("the session ended".into()))?;
        write_frame(&mut stream, &frame).await?;
        stream.finish().map_err(|e| AgentError::Lost(e.to_string()))
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}
