//! One live connection as the rest of the agent sees it: the QUIC connection and the session's
//! outbound sequence, shared by the control loop and the job streams.
//!
//! Every frame is sealed right before it is written, so no frame waits long with an old sequence
//! number while newer ones overtake it (the server's replay window is 128 numbers).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use quinn::Connection;
use reap3r_wire::{Message, OutboundSession, WireError};

use crate::AgentError;
use crate::transport::{connection_error, write_frame};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone)]
pub(crate) struct Link {
    conn: Connection,
    session: Arc<Mutex<OutboundSession>>,
}

impl Link {
    pub(crate) fn new(conn: Connection, session: OutboundSession) -> Self {
        Self {
            conn,
            session: Arc::new(Mutex::new(session)),
        }
    }

    /// Signs `message` with the session's next sequence number.
    pub(crate) fn seal(&self, message: Message) -> Vec<u8> {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session.seal(message, now_ms())
    }

    pub(crate) fn seal_datagram(&self, message: Message) -> Result<Vec<u8>, WireError> {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session.seal_datagram(message, now_ms())
    }

    /// Sends one message on a new uni stream: the stream is opened first (which may wait for
    /// the server's stream credit), then the message is sealed and written.
    pub(crate) async fn send_uni(&self, message: Message) -> Result<(), AgentError> {
        let mut stream = self.conn.open_uni().await.map_err(connection_error)?;
        write_frame(&mut stream, &self.seal(message)).await?;
        stream.finish().map_err(|e| AgentError::Lost(e.to_string()))
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}
