//! The seam between a session actor and its transport.

use reap3r_wire::CloseCode;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("link is closed")]
    Closed,
    #[error("link send queue is full")]
    Full,
}

/// What a session needs from a connection. Implementations must not block: `send_frame` queues
/// an envelope for the control stream and `close` ends the connection with a reason the agent sees.
pub trait AgentLink: Send + Sync + 'static {
    fn send_frame(&self, envelope: Vec<u8>) -> Result<(), LinkError>;
    fn close(&self, code: CloseCode, reason: &str);
    /// Opens a new stream for one job, writes `envelope` (the dispatch) on it, and feeds the
    /// agent's answers on that stream back to the session like control frames. Must not block:
    /// the stream is opened in the background; `Full` when too many job streams are open.
    fn open_job_stream(&self, envelope: Vec<u8>) -> Result<(), LinkError>;
    /// Remote address, for logs.
    fn remote(&self) -> String;
    /// The session is past its handshake (live, or refused): whatever admission slot the
    /// connection held can go to the next one. Called at most once per outcome; a no-op by default.
    fn handshake_done(&self) {}
}
