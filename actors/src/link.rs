//! The seam between a session actor and its transport.

use reap3r_wire::CloseCode;
use tokio::sync::mpsc;

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
    /// Opens a new stream for a channel (a remote shell), writes `opener` on it, and returns
    /// the stream's frames both ways: what is sent on `to_agent` is written as frames, what the
    /// agent writes arrives on `from_agent` (which closes when the stream ends). Must not
    /// block: the stream is opened in the background. `Full` when too many channels are open;
    /// links that carry no channels answer `Closed`.
    fn open_channel(&self, opener: Vec<u8>) -> Result<ChannelPipe, LinkError> {
        let _ = opener;
        Err(LinkError::Closed)
    }
    /// Remote address, for logs.
    fn remote(&self) -> String;
    /// The session is past its handshake (live, or refused): whatever admission slot the
    /// connection held can go to the next one. Called at most once per outcome; a no-op by default.
    fn handshake_done(&self) {}
}

/// The raw frames of one channel stream, both ways (see [`AgentLink::open_channel`]).
#[derive(Debug)]
pub struct ChannelPipe {
    pub to_agent: mpsc::Sender<Vec<u8>>,
    pub from_agent: mpsc::Receiver<Vec<u8>>,
}
