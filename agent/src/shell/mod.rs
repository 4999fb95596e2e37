//! Remote shells: a server-opened channel whose opener carries a signed shell grant; the agent
//! verifies it against its pinned server key, runs the configured shell on a PTY, and relays
//! keystrokes, window sizes and output until the shell exits, the server closes it, or a limit
//! (the grant's idle timeout and maximum duration) ends it. Ending a shell ends every process
//! of its session.
//!
//! A shell outlives its channel: when the stream is cut it keeps running for the grant's
//! reattach grace, its output kept in an [`OutputLog`]; a channel opened with the same grant
//! and `resume_from` reattaches and gets the output from there on.
//!
//! - [`pty`]: the PTY and the shell's session.
//! - [`output`]: the output kept for a reattach.

mod output;
mod pty;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use reap3r_wire::{
    Channel, MAX_SHELL_CHUNK, Message, ShellAck, ShellExit, ShellGrant, ShellOpen, ShellOpened,
    ShellOutput, SigningKey, VerifyingKey,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use self::output::{OutputLog, RESUME_BUFFER_BYTES};
use crate::link::{lock, now_ms};
use crate::protocol::GRANT_SKEW_MS;
use crate::transport::{read_frame, write_frame};

/// Most shells an agent runs at once; the server's per-agent limit is lower by default.
pub(crate) const MAX_AGENT_SHELLS: usize = 16;
/// Bounds of how long a shell whose channel was cut waits for the server to reattach (the
/// grant names the time).
const DETACHED_GRACE_S: std::ops::RangeInclusive<u32> = 5..=600;
/// Session ids remembered as started, so a grant starts one shell at most.
const REMEMBERED_SESSIONS: usize = 1024;
/// Messages queued between a shell and its channel, each way.
const CHANNEL_QUEUE: usize = 64;
/// Keystroke messages queued for the PTY (each ≤ 16 KiB); past it input is dropped, as a
/// program that does not read its terminal cannot take more anyway.
const KEYBOARD_QUEUE: usize = 64;
/// Channels remembered per agent run, so an opener is never accepted twice on a connection.
const REMEMBERED_CHANNELS: usize = 4096;
/// How long output may wait for a channel that does not take it before the shell detaches
/// from that channel (it is stuck; the output stays in the log for a reattach).
const OUTPUT_STALL: Duration = Duration::from_secs(5);
/// After the shell exits, how long what it wrote last is still read.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How long `ShellHost::shutdown` waits for shells to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// What the server sent on the channel, verified.
enum FromServer {
    Input(Vec<u8>),
    Resize(u16, u16),
    Close(String),
}

/// What the shell sends on the channel.
enum ToServer {
    Output(ShellOutput),
    Exit(ShellExit),
}

/// A channel attached to a running shell.
struct Attachment {
    to_server: mpsc::Sender<ToServer>,
    from_server: mpsc::Receiver<FromServer>,
    /// Resets the channel's stream: a channel the shell gave up on (stuck) must end visibly,
    /// so the server reattaches instead of waiting on it.
    cut: Option<oneshot::Sender<()>>,
}

impl Attachment {
    /// Gives up on a stuck channel: its stream is reset, the server sees it end.
    fn cut(mut self) {
        if let Some(cut) = self.cut.take() {
            let _ = cut.send(());
        }
    }
}

/// A reattach: output from `from` on goes to the new channel; the reply is where it starts.
struct Reattach {
    from: u64,
    attachment: Attachment,
    reply: oneshot::Sender<u64>,
}

/// The shells of this agent; cheap to clone.
#[derive(Clone)]
pub(crate) struct ShellHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    agent_id: [u8; 16],
    signing_key: SigningKey,
    server_key: VerifyingKey,
    /// `None`: remote shells are turned off on this agent.
    shell: Option<PathBuf>,
    running: Mutex<HashMap<[u8; 16], mpsc::Sender<Reattach>>>,
    started: Mutex<VecDeque<[u8; 16]>>,
    /// (session nonce, channel id) of every channel accepted, newest last.
    channels: Mutex<VecDeque<([u8; 16], [u8; 16])>>,
    /// Raised once when the agent stops: every shell ends.
    stop: tokio::sync::watch::Sender<bool>,
    ended: tokio::sync::Notify,
}

impl std::fmt::Debug for ShellHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellHost")
            .field("shell", &self.inner.shell)
            .finish_non_exhaustive()
    }
}

impl ShellHost {
    pub(crate) fn new(
        agent_id: [u8; 16],
        signing_key: SigningKey,
        server_key: VerifyingKey,
        shell: Option<PathBuf>,
    ) -> Self {
        Self {
            inner: Arc::new(HostInner {
                agent_id,
                signing_key,
                server_key,
                shell: shell.filter(|p| p.is_file()),
                running: Mutex::new(HashMap::new()),
                started: Mutex::new(VecDeque::new()),
                channels: Mutex::new(VecDeque::new()),
                stop: tokio::sync::watch::Sender::new(false),
                ended: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Whether this agent runs remote shells (it reports `shell` in its hello if so).
    pub(crate) fn enabled(&self) -> bool {
        self.inner.shell.is_some()
    }

    /// Ends every shell (the agent is stopping) and waits for them, up to [`SHUTDOWN_WAIT`].
    pub(crate) async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            let ended = self.inner.ended.notified();
            if lock(&self.inner.running).is_empty()
                || tokio::time::timeout_at(deadline, ended).await.is_err()
            {
                return;
            }
        }
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

    /// Serves a stream the server opened with a shell opener, on the connection whose session
    /// nonce is `session_nonce`, until the shell ends or the stream is cut.
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
        let (channel, open) = match opened {
            Ok((channel, Message::ShellOpen(open))) => (channel, open),
            Ok((_, other)) => {
                warn!(kind = ?other.kind(), "a stream opened with something else than a shell");
                let _ = send.reset(0u32.into());
                return;
            }
            Err(err) => {
                warn!(%err, "refusing a shell channel");
                let _ = send.reset(0u32.into());
                return;
            }
        };
        if !self.first_use(session_nonce, channel.id()) {
            warn!("refusing a shell channel opened twice");
            let _ = send.reset(0u32.into());
            return;
        }
        let channel = Arc::new(Mutex::new(channel));
        let (to_server, to_server_rx) = mpsc::channel(CHANNEL_QUEUE);
        let (from_server_tx, from_server) = mpsc::channel(CHANNEL_QUEUE);
        let (cut, cut_rx) = oneshot::channel();
        let attachment = Attachment {
            to_server,
            from_server,
            cut: Some(cut),
        };
        let (session_id, outcome) = match self.open(&open, attachment).await {
            Ok((session_id, outcome)) => (session_id, outcome),
            Err((session_id, why)) => {
                warn!(session = %uuid::Uuid::from_bytes(session_id), %why, "refusing a shell");
                (session_id, ShellOpened::Refused(why))
            }
        };
        let refused = matches!(outcome, ShellOpened::Refused(_));
        let ack = lock(&channel).seal(
            Message::ShellAck(ShellAck {
                session_id,
                outcome,
            }),
            now_ms(),
        );
        if write_frame(&mut send, &ack).await.is_err() || refused {
            let _ = send.finish();
            return;
        }
        tokio::spawn(read_channel(channel.clone(), recv, from_server_tx));
        write_channel(channel, send, to_server_rx, cut_rx).await;
    }

    /// Starts the shell of a verified grant, or reattaches to it.
    async fn open(
        &self,
        open: &ShellOpen,
        attachment: Attachment,
    ) -> Result<([u8; 16], ShellOpened), ([u8; 16], String)> {
        let inner = &self.inner;
        let claimed = postcard::from_bytes::<ShellGrant>(&open.grant)
            .map(|g| g.session_id)
            .unwrap_or_default();
        let grant = open
            .verify(&inner.server_key, &inner.agent_id, now_ms(), GRANT_SKEW_MS)
            .map_err(|e| (claimed, e.to_string()))?;
        let id = grant.session_id;
        if let Some(from) = open.resume_from {
            let reattach = lock(&inner.running).get(&id).cloned();
            let Some(reattach) = reattach else {
                return Err((id, "no such shell session on this agent".into()));
            };
            let (reply, answer) = oneshot::channel();
            let sent = reattach
                .send(Reattach {
                    from,
                    attachment,
                    reply,
                })
                .await;
            return match (sent, answer.await) {
                (Ok(()), Ok(offset)) => Ok((id, ShellOpened::Resumed { offset })),
                _ => Err((id, "the shell session has ended".into())),
            };
        }
        let Some(shell) = inner.shell.clone() else {
            return Err((id, "remote shells are turned off on this agent".into()));
        };
        {
            let mut started = lock(&inner.started);
            if started.contains(&id) {
                return Err((id, "this shell session has already started".into()));
            }
            if lock(&inner.running).len() >= MAX_AGENT_SHELLS {
                return Err((id, format!("{MAX_AGENT_SHELLS} shells already run here")));
            }
            if started.len() == REMEMBERED_SESSIONS {
                started.pop_front();
            }
            started.push_back(id);
        }
        let (master, keyboard, process) = pty::spawn(&shell, grant.cols, grant.rows)
            .map_err(|e| (id, format!("cannot start {}: {e}", shell.display())))?;
        let pid = process.pid();
        let (reattach_tx, reattach_rx) = mpsc::channel(1);
        lock(&inner.running).insert(id, reattach_tx);
        info!(session = %uuid::Uuid::from_bytes(id), operator = %grant.operator, pid, "shell started");
        let host = self.clone();
        let stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            let shell = Shell {
                master,
                keys: type_into(keyboard),
                process,
            };
            let exit = run_shell(shell, &grant, attachment, reattach_rx, stop).await;
            lock(&host.inner.running).remove(&id);
            host.inner.ended.notify_waiters();
            info!(session = %uuid::Uuid::from_bytes(id), reason = %exit.reason, "shell ended");
        });
        Ok((id, ShellOpened::Started { pid }))
    }
}

/// Verifies what the server sends on the channel and hands it to the shell; returns when the
/// stream ends or a frame is refused (the shell then detaches).
async fn read_channel(
    channel: Arc<Mutex<Channel>>,
    mut recv: RecvStream,
    to_shell: mpsc::Sender<FromServer>,
) {
    while let Ok(frame) = read_frame(&mut recv).await {
        let message = match lock(&channel).accept(frame) {
            Ok(message) => message,
            Err(err) => {
                warn!(%err, "refusing a shell channel frame");
                return;
            }
        };
        let event = match message {
            Message::ShellInput(input) if input.data.len() <= MAX_SHELL_CHUNK => {
                FromServer::Input(input.data)
            }
            Message::ShellResize(size) if size.is_valid() => {
                FromServer::Resize(size.cols, size.rows)
            }
            Message::ShellClose(close) => FromServer::Close(close.reason),
            other => {
                warn!(kind = ?other.kind(), "unexpected message on a shell channel");
                return;
            }
        };
        if to_shell.send(event).await.is_err() {
            return;
        }
    }
}

/// Seals what the shell sends and writes it; finishes the stream after the exit.
async fn write_channel(
    channel: Arc<Mutex<Channel>>,
    mut send: SendStream,
    mut from_shell: mpsc::Receiver<ToServer>,
    mut cut: oneshot::Receiver<()>,
) {
    // `cut` answers Err once the attachment is gone without cutting (the normal end).
    let mut cuttable = true;
    loop {
        let event = tokio::select! {
            event = from_shell.recv() => event,
            given_up = &mut cut, if cuttable => match given_up {
                Ok(()) => return drop(send.reset(0u32.into())),
                Err(_) => {
                    cuttable = false;
                    continue;
                }
            },
        };
        let Some(event) = event else { return };
        let (message, last) = match event {
            ToServer::Output(output) => (Message::ShellOutput(output), false),
            ToServer::Exit(exit) => (Message::ShellExit(exit), true),
        };
        let frame = lock(&channel).seal(message, now_ms());
        let written = tokio::select! {
            written = write_frame(&mut send, &frame) => written,
            Ok(()) = &mut cut, if cuttable => return drop(send.reset(0u32.into())),
        };
        if written.is_err() {
            return;
        }
        if last {
            let _ = send.finish();
            // Let the exit reach the server before the stream is dropped.
            let _ = send.stopped().await;
            return;
        }
    }
}

/// The next message from the attached channel; never, while detached.
async fn from_server(attached: &mut Option<Attachment>) -> Option<FromServer> {
    match attached {
        Some(a) => a.from_server.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends `data` from `offset` on to the channel in chunks; false if the channel is gone, or
/// stuck for [`OUTPUT_STALL`].
async fn send_output(attachment: &Attachment, mut offset: u64, data: &[u8]) -> bool {
    for chunk in data.chunks(MAX_SHELL_CHUNK) {
        let output = ShellOutput {
            offset,
            data: chunk.to_vec(),
        };
        let sent = tokio::time::timeout(
            OUTPUT_STALL,
            attachment.to_server.send(ToServer::Output(output)),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return false;
        }
        offset += chunk.len() as u64;
    }
    true
}

/// A running shell: its terminal, where its keystrokes go, its process.
struct Shell {
    master: pty::Master,
    keys: KeyQueue,
    process: pty::ShellProcess,
}

/// Keystrokes on their way to the PTY, written by a task of their own so that a program that
/// does not read its input never holds up output, limits or a close.
struct KeyQueue {
    tx: mpsc::Sender<Vec<u8>>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for KeyQueue {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

fn type_into(keyboard: pty::Keyboard) -> KeyQueue {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(KEYBOARD_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if let Err(err) = keyboard.write_all(&data).await {
                warn!(%err, "cannot write to the terminal");
                return;
            }
        }
    });
    KeyQueue { tx, writer }
}

/// Runs one shell until it exits, the server closes it, or a limit ends it; then ends its
/// session and tells the attached channel, if any.
async fn run_shell(
    shell: Shell,
    grant: &ShellGrant,
    first: Attachment,
    mut reattach: mpsc::Receiver<Reattach>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> ShellExit {
    let Shell {
        master,
        keys,
        mut process,
    } = shell;
    let started = Instant::now();
    let max_duration = Duration::from_secs(u64::from(grant.max_duration_s.max(1)));
    let idle_timeout = Duration::from_secs(u64::from(grant.idle_timeout_s.max(1)));
    let detached_grace = Duration::from_secs(u64::from(
        grant
            .reattach_grace_s
            .clamp(*DETACHED_GRACE_S.start(), *DETACHED_GRACE_S.end()),
    ));
    let mut last_input = started;
    let mut detached_since: Option<Instant> = None;
    let mut log = OutputLog::new(RESUME_BUFFER_BYTES);
    let mut attached = Some(first);
    let mut buf = vec![0u8; MAX_SHELL_CHUNK];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (exit_code, reason) = loop {
        tokio::select! {
            read = master.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        // Nothing holds the terminal any more; the shell has exited or is about to.
                        let status = tokio::time::timeout(Duration::from_secs(2), process.wait()).await;
                        break (status.ok().and_then(Result::ok).flatten(), "the shell exited".to_owned());
                    }
                    Ok(n) => n,
                };
                let offset = log.push(&buf[..n]);
                if let Some(a) = &attached
                    && !send_output(a, offset, &buf[..n]).await
                {
                    // Stuck, or gone: cut it, so the server reattaches.
                    if let Some(stuck) = attached.take() {
                        stuck.cut();
                    }
                    detached_since = Some(Instant::now());
                }
            }
            event = from_server(&mut attached) => match event {
                Some(FromServer::Input(data)) => {
                    last_input = Instant::now();
                    match keys.tx.try_send(data) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            warn!("keystrokes dropped: the program on the terminal is not reading");
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            break (None, "cannot write to the terminal".to_owned());
                        }
                    }
                }
                Some(FromServer::Resize(cols, rows)) => {
                    if let Err(err) = master.resize(cols, rows) {
                        warn!(%err, "cannot resize the terminal");
                    }
                }
                Some(FromServer::Close(why)) => break (None, format!("closed by the server: {why}")),
                None => {
                    attached = None;
                    detached_since = Some(Instant::now());
                }
            },
            Some(Reattach { from, attachment, reply }) = reattach.recv() => {
                let (start, bytes) = log.since(from);
                let _ = reply.send(start);
                if send_output(&attachment, start, &bytes).await {
                    // A channel still attached is an old one the server gave up on.
                    if let Some(old) = attached.replace(attachment) {
                        old.cut();
                    }
                    detached_since = None;
                } else {
                    attachment.cut();
                }
            }
            status = process.wait() => {
                // What the shell wrote last is still in the terminal: read it before the end.
                let code = status.ok().flatten();
                // Bounded: a background job may keep writing after the shell is gone.
                let drain_until = Instant::now() + DRAIN_AFTER_EXIT;
                while let Ok(Ok(n)) = tokio::time::timeout_at(drain_until, master.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    let offset = log.push(&buf[..n]);
                    if let Some(a) = &attached {
                        send_output(a, offset, &buf[..n]).await;
                    }
                }
                break (code, "the shell exited".to_owned());
            }
            // (The guard `wait_for` answers is dropped at once: it must not live across awaits.)
            () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                break (None, "the agent is stopping".to_owned());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if now.duration_since(started) >= max_duration {
                    break (None, format!("the session reached its maximum duration ({} s)", max_duration.as_secs()));
                }
                if now.duration_since(last_input) >= idle_timeout {
                    break (None, format!("no input for {} s", idle_timeout.as_secs()));
                }
                if detached_since.is_some_and(|at| now.duration_since(at) >= detached_grace) {
                    break (None, format!("no channel reattached within {} s", detached_grace.as_secs()));
                }
            }
        }
    };
    drop(keys);
    process.end_session().await;
    let exit = ShellExit {
        exit_code,
        reason,
        output_bytes: log.end(),
    };
    if let Some(a) = attached {
        let _ = a.to_server.send(ToServer::Exit(exit.clone())).await;
    }
    exit
}

/// The shell an agent runs when none is configured: bash if there is one, else sh.
pub fn default_shell() -> PathBuf {
    ["/bin/bash", "/bin/sh"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap_or(Path::new("/bin/sh"))
        .to_path_buf()
}
