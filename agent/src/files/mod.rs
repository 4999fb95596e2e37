//! File transfers: a server-opened channel whose opener ([`FileOpen`]) carries a signed file
//! grant; the agent verifies it against its pinned server key and then either writes the file
//! the server pushes ([`writer`]) or sends the file the server pulls ([`reader`]). The protocol
//! and its pure cores ([`reap3r_wire::FileReceiver`], [`reap3r_wire::FileSender`]) live in the
//! wire crate; this module is the agent's driver around them: files on disk, the channel's
//! frames, and the limits.
//!
//! A refusal (grant, path, a device, the limit, transfers turned off) is answered on the channel
//! with `FileAck::Failed` and the stream finishes. A stream that is cut just ends: a push keeps
//! its temporary file, and the server resumes on a new channel with a new grant for the same
//! transfer. That new channel takes the transfer over from one the agent still serves (the old
//! one may not have noticed the cut yet), so two channels never write one temporary file.
//!
//! - [`writer`]: a push, into a temporary file renamed over the destination once it verified;
//!   [`target`]: that file and the destination on disk, in a directory [`walk`] opened.
//! - [`reader`]: a pull, paced to the grant's rate.
//! - [`disk`]: what both do with files.

mod disk;
mod reader;
mod target;
mod walk;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use reap3r_wire::{
    Channel, FileAck, FileDirection, FileGrant, FileOpen, Message, SigningKey, VerifyingKey,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::link::{lock, now_ms};
use crate::protocol::GRANT_SKEW_MS;
use crate::transport::{read_frame, write_frame};

/// Most transfers an agent runs at once (a resume of a running transfer takes its place).
pub(crate) const MAX_AGENT_TRANSFERS: usize = 8;
/// Channels remembered per agent run, so an opener is never accepted twice on a connection.
const REMEMBERED_CHANNELS: usize = 4096;
/// Completed pushes remembered, so that a resume after the last answer was lost is answered
/// `Complete` instead of writing the file again.
const REMEMBERED_TRANSFERS: usize = 1024;
/// Messages queued between a transfer and its channel, each way (a chunk is at most 32 KiB).
const CHANNEL_QUEUE: usize = 16;
/// How long the last answer of a transfer may take to reach the server before its stream is
/// dropped.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The file transfers of this agent; cheap to clone.
#[derive(Clone)]
pub(crate) struct FileHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    agent_id: [u8; 16],
    signing_key: SigningKey,
    server_key: VerifyingKey,
    /// False: file transfers are turned off on this agent (every opener is refused).
    enabled: bool,
    /// (session nonce, channel id) of every channel accepted, newest last.
    channels: Mutex<VecDeque<([u8; 16], [u8; 16])>>,
    /// Pushes that completed: transfer id and the file's BLAKE3, newest last.
    completed: Mutex<VecDeque<([u8; 16], [u8; 32])>>,
    /// The transfers running, by transfer id; its length is what [`MAX_AGENT_TRANSFERS`] bounds.
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    transfers: HashMap<[u8; 16], Transfer>,
    /// Tells the claims of one transfer apart (the one that ends removes only its own).
    next_generation: u64,
}

/// A running transfer: the channel serving it now, and the turn every channel of this transfer
/// waits for before it touches the file.
struct Transfer {
    generation: u64,
    /// Raised when a newer channel takes the transfer over.
    stop: watch::Sender<bool>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// One channel's claim on its transfer; the transfer stops counting as running once the claim
/// of its newest channel is dropped.
struct Claim {
    host: FileHost,
    transfer_id: [u8; 16],
    generation: u64,
    stop: watch::Receiver<bool>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut running = lock(&self.host.inner.running);
        if running
            .transfers
            .get(&self.transfer_id)
            .is_some_and(|t| t.generation == self.generation)
        {
            running.transfers.remove(&self.transfer_id);
        }
    }
}

impl std::fmt::Debug for FileHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHost")
            .field("enabled", &self.inner.enabled)
            .finish_non_exhaustive()
    }
}

impl FileHost {
    pub(crate) fn new(
        agent_id: [u8; 16],
        signing_key: SigningKey,
        server_key: VerifyingKey,
        enabled: bool,
    ) -> Self {
        Self {
            inner: Arc::new(HostInner {
                agent_id,
                signing_key,
                server_key,
                enabled,
                channels: Mutex::new(VecDeque::new()),
                completed: Mutex::new(VecDeque::new()),
                running: Mutex::new(Running::default()),
            }),
        }
    }

    /// Whether this agent moves files (it reports [`reap3r_wire::FILE_CAPABILITY`] if so).
    pub(crate) fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Serves a stream the server opened with a file opener, on the connection whose session
    /// nonce is `session_nonce`, until the transfer ends or the stream is cut.
    pub(crate) fn serve(
        &self,
        frame: Vec<u8>,
        send: SendStream,
        recv: RecvStream,
        session_nonce: [u8; 16],
    ) {
        let host = self.clone();
        tokio::spawn(async move { host.serve_channel(frame, send, recv, session_nonce).await });
    }

    /// Whether the channel is new on its connection (and remembers it).
    fn first_use(&self, session_nonce: [u8; 16], channel: [u8; 16]) -> bool {
        let mut seen = lock(&self.inner.channels);
        if seen.contains(&(session_nonce, channel)) {
            return false;
        }
        if seen.len() == REMEMBERED_CHANNELS {
            seen.pop_front();
        }
        seen.push_back((session_nonce, channel));
        true
    }

    /// The hash of a push that completed here, if it is remembered.
    fn completed(&self, transfer_id: &[u8; 16]) -> Option<[u8; 32]> {
        lock(&self.inner.completed)
            .iter()
            .find(|(id, _)| id == transfer_id)
            .map(|(_, hash)| *hash)
    }

    fn remember_completed(&self, transfer_id: [u8; 16], blake3: [u8; 32]) {
        let mut completed = lock(&self.inner.completed);
        if completed.iter().any(|(id, _)| *id == transfer_id) {
            return;
        }
        if completed.len() == REMEMBERED_TRANSFERS {
            completed.pop_front();
        }
        completed.push_back((transfer_id, blake3));
    }

    /// The grant of an opener, verified, or why it is refused.
    fn admit(&self, open: &FileOpen) -> Result<FileGrant, String> {
        let inner = &self.inner;
        if !inner.enabled {
            return Err("file transfers are turned off on this agent".into());
        }
        open.verify(&inner.server_key, &inner.agent_id, now_ms(), GRANT_SKEW_MS)
            .map_err(|e| e.to_string())
    }

    /// Claims a place for `transfer_id` among the running transfers: a new transfer within
    /// [`MAX_AGENT_TRANSFERS`], or a running one, which this channel takes over (the older
    /// channel is told to stop).
    fn claim(&self, transfer_id: [u8; 16]) -> Result<Claim, String> {
        let mut running = lock(&self.inner.running);
        let generation = running.next_generation;
        let full = running.transfers.len() >= MAX_AGENT_TRANSFERS;
        let (stop_tx, stop) = watch::channel(false);
        let turn = match running.transfers.get_mut(&transfer_id) {
            Some(transfer) => {
                let older = std::mem::replace(&mut transfer.stop, stop_tx);
                older.send_replace(true);
                transfer.generation = generation;
                transfer.turn.clone()
            }
            None if full => {
                return Err(format!(
                    "{MAX_AGENT_TRANSFERS} file transfers already run on this agent"
                ));
            }
            None => {
                let turn = Arc::new(tokio::sync::Mutex::new(()));
                running.transfers.insert(
                    transfer_id,
                    Transfer {
                        generation,
                        stop: stop_tx,
                        turn: turn.clone(),
                    },
                );
                turn
            }
        };
        running.next_generation += 1;
        Ok(Claim {
            host: self.clone(),
            transfer_id,
            generation,
            stop,
            turn,
        })
    }

    async fn serve_channel(
        self,
        frame: Vec<u8>,
        mut send: SendStream,
        recv: RecvStream,
        session_nonce: [u8; 16],
    ) {
        let inner = &self.inner;
        let opened = Channel::accept_open(
            frame,
            &session_nonce,
            &inner.server_key,
            inner.agent_id,
            inner.signing_key.clone(),
        );
        let (mut channel, open) = match opened {
            Ok((channel, Message::FileOpen(open))) => (channel, open),
            Ok((_, other)) => {
                warn!(kind = ?other.kind(), "a stream opened with something else than a file transfer");
                let _ = send.reset(0u32.into());
                return;
            }
            Err(err) => {
                warn!(%err, "refusing a file channel");
                let _ = send.reset(0u32.into());
                return;
            }
        };
        if !self.first_use(session_nonce, channel.id()) {
            warn!("refusing a file channel opened twice");
            let _ = send.reset(0u32.into());
            return;
        }
        let admitted = self
            .admit(&open)
            .and_then(|grant| Ok((self.claim(grant.transfer_id)?, grant)));
        let (mut claim, grant) = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                warn!(%why, "refusing a file transfer");
                let frame = channel.seal(Message::FileAck(FileAck::Failed(why)), now_ms());
                if write_frame(&mut send, &frame).await.is_ok() {
                    finish(&mut send).await;
                }
                return;
            }
        };
        // Wait until an older channel of this transfer has let go of the file.
        let turn = tokio::select! {
            turn = claim.turn.clone().lock_owned() => turn,
            () = stopped(&mut claim.stop) => return drop(send.reset(0u32.into())),
        };
        if *claim.stop.borrow() {
            return drop(send.reset(0u32.into()));
        }
        let transfer = uuid::Uuid::from_bytes(grant.transfer_id);
        info!(%transfer, direction = ?grant.direction, path = %grant.path, "file transfer started");
        let channel = Arc::new(Mutex::new(channel));
        let (from_server_tx, from_server) = mpsc::channel(CHANNEL_QUEUE);
        let (to_server, to_server_rx) = mpsc::channel(CHANNEL_QUEUE);
        let reader = tokio::spawn(read_channel(channel.clone(), recv, from_server_tx));
        let peer = Peer {
            to_server,
            from_server,
            stop: claim.stop.clone(),
        };
        let drive = async {
            match grant.direction {
                FileDirection::Push => writer::push(&self, &grant, peer).await,
                FileDirection::Pull => reader::pull(&grant, open.offset, peer).await,
            }
        };
        let written = write_channel(channel, &mut send, to_server_rx, claim.stop.clone());
        let (ended, ()) = tokio::join!(drive, written);
        reader.abort();
        // The file is let go of before the last answer is waited on: a resume may start.
        drop(turn);
        drop(claim);
        match ended {
            Ok(()) => {
                finish(&mut send).await;
                info!(%transfer, "file transfer ended");
            }
            Err(Cut) => {
                let _ = send.reset(0u32.into());
                info!(%transfer, "file channel cut; the server may resume");
            }
        }
    }
}

/// Finishes a stream whose last answer was written and lets it reach the server.
async fn finish(send: &mut SendStream) {
    let _ = send.finish();
    let _ = tokio::time::timeout(FINISH_WAIT, send.stopped()).await;
}

/// Resolves once `stop` is raised; never if its sender is gone without raising it.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The channel ended under a transfer: the stream was cut, a frame did not verify, or a newer
/// channel took the transfer over. Nothing more is sent; the stream is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut;

/// A transfer's side of its channel: the server's messages (verified by the channel's reader
/// task), its own (sealed and written by the channel's writer), and the signal that a newer
/// channel took the transfer over. The drivers see only this, so they run without sockets in
/// tests.
pub(super) struct Peer {
    to_server: mpsc::Sender<Message>,
    from_server: mpsc::Receiver<Message>,
    stop: watch::Receiver<bool>,
}

impl Peer {
    /// Sends `message`; `Cut` once the channel is gone or taken over.
    pub(super) async fn send(&mut self, message: Message) -> Result<(), Cut> {
        tokio::select! {
            biased;
            () = stopped(&mut self.stop) => Err(Cut),
            sent = self.to_server.send(message) => sent.map_err(|_| Cut),
        }
    }

    /// Answers `Failed(why)`: the transfer ends (its last answer was sent).
    pub(super) async fn fail(&mut self, why: String) -> Result<(), Cut> {
        warn!(%why, "file transfer failed");
        self.send(Message::FileAck(FileAck::Failed(why))).await
    }

    /// The signal that a newer channel took the transfer over, for blocking work to watch.
    pub(super) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// The server's next message.
    pub(super) async fn recv(&mut self) -> Result<Message, Cut> {
        tokio::select! {
            biased;
            () = stopped(&mut self.stop) => Err(Cut),
            // The writer gave up on the stream: nothing more can be answered on it.
            () = self.to_server.closed() => Err(Cut),
            message = self.from_server.recv() => message.ok_or(Cut),
        }
    }

    /// A message the server sent already, without waiting.
    pub(super) fn try_recv(&mut self) -> Result<Option<Message>, Cut> {
        if *self.stop.borrow() {
            return Err(Cut);
        }
        match self.from_server.try_recv() {
            Ok(message) => Ok(Some(message)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(Cut),
        }
    }

    /// Runs `work` (a pause, a long read) unless the channel ends first.
    pub(super) async fn race<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Cut> {
        tokio::select! {
            biased;
            () = stopped(&mut self.stop) => Err(Cut),
            () = self.to_server.closed() => Err(Cut),
            done = work => Ok(done),
        }
    }
}

/// Verifies what the server sends on the channel and hands it to the transfer; returns when
/// the stream ends or a frame is refused (the transfer then sees the channel cut).
async fn read_channel(
    channel: Arc<Mutex<Channel>>,
    mut recv: RecvStream,
    to_transfer: mpsc::Sender<Message>,
) {
    while let Ok(frame) = read_frame(&mut recv).await {
        let message = match lock(&channel).accept(frame) {
            Ok(message) => message,
            Err(err) => {
                warn!(%err, "refusing a file channel frame");
                return;
            }
        };
        if to_transfer.send(message).await.is_err() {
            return;
        }
    }
}

/// Seals what the transfer sends, right before it is written, and writes it; returns once the
/// transfer dropped its side (everything it sent was written), a write fails, or a newer
/// channel took the transfer over (this stream may be stuck: it is not waited on).
async fn write_channel(
    channel: Arc<Mutex<Channel>>,
    send: &mut SendStream,
    mut from_transfer: mpsc::Receiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            message = from_transfer.recv() => message,
            () = stopped(&mut stop) => return,
        };
        let Some(message) = message else { return };
        let frame = lock(&channel).seal(message, now_ms());
        let written = tokio::select! {
            written = write_frame(send, &frame) => written,
            () = stopped(&mut stop) => return,
        };
        if written.is_err() {
            return;
        }
    }
}

/// Tests that give files away need root (the agent runs as root): they run as root, fail when
/// `REAP3R_REQUIRE_ROOT=1` (as `.ci/run` sets) and root is missing, and otherwise say they are
/// skipped.
#[cfg(test)]
pub(crate) fn runs_as_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("REAP3R_REQUIRE_ROOT").as_deref() != Ok("1"),
        "{test} needs root and REAP3R_REQUIRE_ROOT=1"
    );
    eprintln!("SKIPPED {test}: needs root (set REAP3R_REQUIRE_ROOT=1 to make this a failure)");
    false
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) const AGENT: [u8; 16] = [4; 16];

    pub(crate) fn host() -> FileHost {
        let server = SigningKey::from_bytes(&[7; 32]);
        FileHost::new(
            AGENT,
            SigningKey::from_bytes(&[3; 32]),
            server.verifying_key(),
            true,
        )
    }

    /// The server's ends of a test channel.
    pub(crate) struct Server {
        pub(crate) to_agent: mpsc::Sender<Message>,
        pub(crate) from_agent: mpsc::Receiver<Message>,
        pub(crate) stop: watch::Sender<bool>,
    }

    /// A transfer's peer over in-memory queues (large enough that a test never blocks on them).
    pub(crate) fn peer() -> (Peer, Server) {
        let (to_agent, from_server) = mpsc::channel(1024);
        let (to_server, from_agent) = mpsc::channel(1024);
        let (stop, stop_rx) = watch::channel(false);
        let peer = Peer {
            to_server,
            from_server,
            stop: stop_rx,
        };
        let server = Server {
            to_agent,
            from_agent,
            stop,
        };
        (peer, server)
    }

    #[test]
    fn transfers_are_limited_and_a_resume_takes_over_its_transfer() {
        let host = host();
        let claims: Vec<Claim> = (0..MAX_AGENT_TRANSFERS as u8)
            .map(|i| host.claim([i; 16]).unwrap())
            .collect();
        let over = host.claim([100; 16]).err().unwrap();
        assert!(over.contains("already run"), "{over}");
        // A new channel for a running transfer takes its place, over the limit or not.
        let older = &claims[3];
        let newer = host.claim([3; 16]).unwrap();
        assert!(*older.stop.borrow());
        assert!(!*newer.stop.borrow());
        // The older channel ending does not end the transfer: it still counts.
        drop(claims);
        assert_eq!(lock(&host.inner.running).transfers.len(), 1);
        assert!(host.claim([100; 16]).is_ok());
        drop(newer);
        assert!(lock(&host.inner.running).transfers.is_empty());
    }

    #[test]
    fn completed_pushes_and_channels_are_remembered_within_bounds() {
        let host = host();
        for i in 0..=REMEMBERED_TRANSFERS as u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            host.remember_completed(id, [i as u8; 32]);
        }
        assert_eq!(lock(&host.inner.completed).len(), REMEMBERED_TRANSFERS);
        assert_eq!(host.completed(&[0; 16]), None, "the oldest is forgotten");
        let mut last = [0u8; 16];
        last[..4].copy_from_slice(&(REMEMBERED_TRANSFERS as u32).to_be_bytes());
        assert_eq!(
            host.completed(&last),
            Some([REMEMBERED_TRANSFERS as u8; 32])
        );
        assert!(host.first_use([1; 16], [2; 16]));
        assert!(!host.first_use([1; 16], [2; 16]));
        assert!(host.first_use([9; 16], [2; 16]), "another connection");
    }

    #[test]
    fn a_turned_off_agent_refuses_every_opener() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let host = FileHost::new(
            AGENT,
            SigningKey::from_bytes(&[3; 32]),
            server.verifying_key(),
            false,
        );
        let open = FileOpen {
            channel: [1; 16],
            grant: vec![],
            signature: vec![],
            offset: 0,
        };
        assert!(!host.enabled());
        assert_eq!(
            host.admit(&open),
            Err("file transfers are turned off on this agent".into())
        );
        // Turned on, the same (unsigned) opener is refused for its signature instead.
        let why = self::host().admit(&open).unwrap_err();
        assert!(why.contains("signed"), "{why}");
    }

    #[tokio::test]
    async fn a_peer_ends_when_taken_over_or_when_the_server_side_goes() {
        let (mut peer, server) = peer();
        server
            .to_agent
            .send(Message::FileAck(FileAck::Held { offset: 0 }))
            .await
            .unwrap();
        assert!(matches!(peer.try_recv(), Ok(Some(Message::FileAck(_)))));
        assert_eq!(peer.try_recv(), Ok(None));
        server.stop.send_replace(true);
        assert_eq!(peer.recv().await, Err(Cut));
        assert_eq!(
            peer.send(Message::FileAck(FileAck::Held { offset: 0 }))
                .await,
            Err(Cut)
        );
        // The server side's queue to the agent closes: the channel is cut.
        let (mut peer, Server { to_agent, stop, .. }) = self::peer();
        drop(to_agent);
        assert_eq!(peer.recv().await, Err(Cut));
        drop(stop);
    }
}
