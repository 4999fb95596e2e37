//! One task per shell session, between the operator's socket and the agent's channel: it opens
//! (and, after a cut, reopens) the channel, verifies what the agent sends, records the output,
//! forwards it, and writes the session's end and its audit entry in one transaction. The
//! decisions are [`ShellCore`]'s; this file carries them out.

use std::collections::VecDeque;
use std::time::Duration;

use reap3r_store::{ShellEnd, ShellSession, Uuid};
use reap3r_wire::{
    MAX_SHELL_CHUNK, Message, ShellClose, ShellInput, ShellOpen, ShellOpened, ShellResize,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::ShellHub;
use super::core::{Effect, ShellCore};
use super::open::{shell_target, truncate};
use super::recording::{CHUNK_BYTES, CastHeader, Recording};
use crate::error::{DomainError, DomainResult};
use crate::{AgentChannel, ChannelRequest, Delivery, audit};

/// Messages queued for the operator's socket; a socket that stays this far behind for
/// [`CLIENT_SEND_TIMEOUT`] is dropped (the session waits for a reattach).
const CLIENT_QUEUE: usize = 256;
const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Output kept to show a socket that (re)attaches what the screen last showed.
const SCREEN_TAIL_BYTES: usize = 64 * 1024;
/// How often the recording's waiting text is stored, at the latest.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How long a frame may wait for the agent's channel (64 frames queued) before the session
/// ends: the agent no longer reads what it is sent.
const AGENT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
const STALLED: &str = "the agent stopped reading the shell's channel";
/// At the end, how long the agent has to confirm that its shell ended.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Longest reason from the agent kept in the session's record and the audit.
const MAX_REASON_BYTES: usize = 512;
/// Attempts to store a recording chunk, or the session's end, before giving up (logged).
const STORE_ATTEMPTS: usize = 3;

/// What the relay tells the operator's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellEvent {
    /// The shell's output.
    Output(Vec<u8>),
    /// The shell runs (its pid on the agent); sent on every attach once it does.
    Started { pid: u32 },
    /// The channel to the agent dropped; the relay is reattaching.
    AgentLost,
    /// Reattached to the agent; output goes on.
    Resumed,
    /// Another socket attached to this session; this one is done.
    Superseded,
    /// The session ended.
    Ended {
        exit_code: Option<i32>,
        reason: String,
    },
}

/// What the operator's socket sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellKeys {
    Input(Vec<u8>),
    Resize {
        cols: u16,
        rows: u16,
    },
    /// End the session.
    Close,
}

/// An attached socket's ends: events to send it, keys it typed.
#[derive(Debug)]
pub struct ShellAttachment {
    pub session: ShellSession,
    pub events: mpsc::Receiver<ShellEvent>,
    pub keys: mpsc::Sender<ShellKeys>,
}

pub(super) enum RelayMsg {
    Attach(Client, oneshot::Sender<()>),
    Shutdown,
}

pub(super) struct Client {
    events: mpsc::Sender<ShellEvent>,
    keys: mpsc::Receiver<ShellKeys>,
}

/// Starts the relay of a session just opened.
pub(super) fn start(
    hub: &ShellHub,
    session: ShellSession,
    hostname: &str,
    grant: Vec<u8>,
    signature: [u8; 64],
) {
    let (tx, inbox) = mpsc::channel(8);
    hub.running().insert(session.id, tx);
    let now = hub.inner.domain.now_ms();
    let settings = &hub.inner.settings;
    let recording = Recording::new(
        &CastHeader {
            cols: session.cols as u16,
            rows: session.rows as u16,
            started_at_ms: now,
            title: format!("{} on {hostname}", session.operator),
        },
        settings.recording_cap_bytes,
    );
    let relay = Relay {
        hub: hub.clone(),
        core: ShellCore::new(settings.limits(), session.created_at, session.expires_at),
        session,
        grant,
        signature: signature.to_vec(),
        recording,
        agent: None,
        opening: None,
        client: None,
        pid: None,
        screen: VecDeque::new(),
        exit_code: None,
        inbox,
    };
    let session = relay.session.clone();
    let id = session.id;
    let hub = hub.clone();
    tokio::spawn(async move {
        // A relay that fails still ends its session: the record says so, and the agent's shell
        // ends when its channel drops (after the reattach grace at the latest).
        if let Err(err) = tokio::spawn(relay.run()).await {
            warn!(session = %id, %err, "a shell relay failed");
            let end = ShellEnd {
                reason: "the server's relay of the session failed".into(),
                exit_code: None,
                bytes_in: 0,
                bytes_out: 0,
            };
            if let Err(err) = record_end(&hub, &session, &end, 0).await {
                warn!(session = %id, %err, "could not record the end of a failed shell relay");
            }
            hub.relay_ended(id);
        }
    });
}

/// Attaches a new socket to a running session.
pub(super) async fn attach(hub: &ShellHub, session: ShellSession) -> DomainResult<ShellAttachment> {
    let relay = hub.running().get(&session.id).cloned();
    let Some(relay) = relay else {
        return Err(DomainError::conflict(
            "the shell session has ended (or runs on another server node)",
        ));
    };
    let (events_tx, events) = mpsc::channel(CLIENT_QUEUE);
    let (keys, keys_rx) = mpsc::channel(CLIENT_QUEUE);
    let (done, attached) = oneshot::channel();
    let client = Client {
        events: events_tx,
        keys: keys_rx,
    };
    if relay.send(RelayMsg::Attach(client, done)).await.is_err() || attached.await.is_err() {
        return Err(DomainError::conflict("the shell session has ended"));
    }
    Ok(ShellAttachment {
        session,
        events,
        keys,
    })
}

/// Ends the sessions this node left open (see [`ShellHub::recover`]).
pub(super) async fn end_orphans(hub: &ShellHub) -> DomainResult<usize> {
    let domain = &hub.inner.domain;
    let now = domain.now_ms();
    let mut tx = domain.begin().await?;
    let open = tx.open_shells_of_node(&hub.inner.node_id).await?;
    for session in &open {
        let end = ShellEnd {
            reason: "the server stopped while the session ran".into(),
            exit_code: None,
            bytes_in: session.bytes_in as u64,
            bytes_out: session.bytes_out as u64,
        };
        end_in(&mut tx, session, &end, session.recording_bytes as u64, now).await?;
    }
    domain.commit(tx).await?;
    Ok(open.len())
}

/// Ends a session's record and audits its close (`shell.close`, with byte counts), in one
/// transaction; nothing if it had ended already.
async fn record_end(
    hub: &ShellHub,
    session: &ShellSession,
    end: &ShellEnd,
    recording_bytes: u64,
) -> DomainResult<()> {
    let domain = &hub.inner.domain;
    let now = domain.now_ms();
    let mut tx = domain.begin().await?;
    end_in(&mut tx, session, end, recording_bytes, now).await?;
    domain.commit(tx).await
}

/// [`record_end`]'s writes, in the caller's transaction.
async fn end_in(
    tx: &mut reap3r_store::Tx,
    session: &ShellSession,
    end: &ShellEnd,
    recording_bytes: u64,
    now: i64,
) -> DomainResult<()> {
    if tx.end_shell_session(session.id, end, now).await?.is_none() {
        return Ok(());
    }
    audit::record_as(
        tx,
        Some(session.org_id),
        &session.operator,
        "shell.close",
        Some(shell_target(session.id)),
        json!({
            "agent_id": session.agent_id,
            "reason": end.reason,
            "exit_code": end.exit_code,
            "bytes_in": end.bytes_in,
            "bytes_out": end.bytes_out,
            "recording_bytes": recording_bytes,
        }),
        now,
    )
    .await
}

struct Relay {
    hub: ShellHub,
    session: ShellSession,
    core: ShellCore,
    grant: Vec<u8>,
    signature: Vec<u8>,
    recording: Recording,
    agent: Option<AgentChannel>,
    /// An open asked of the agent's session, not answered yet.
    opening: Option<oneshot::Receiver<Result<AgentChannel, String>>>,
    client: Option<Client>,
    pid: Option<u32>,
    screen: VecDeque<u8>,
    exit_code: Option<i32>,
    inbox: mpsc::Receiver<RelayMsg>,
}

/// The next frame of the agent's channel; never, without one. `None`: the stream ended.
async fn agent_frame(agent: &mut Option<AgentChannel>) -> Option<Vec<u8>> {
    match agent {
        Some(a) => a.pipe.from_agent.recv().await,
        None => std::future::pending().await,
    }
}

async fn client_keys(client: &mut Option<Client>) -> Option<ShellKeys> {
    match client {
        Some(c) => c.keys.recv().await,
        None => std::future::pending().await,
    }
}

async fn opened(
    opening: &mut Option<oneshot::Receiver<Result<AgentChannel, String>>>,
) -> Result<AgentChannel, String> {
    match opening {
        Some(rx) => rx
            .await
            .unwrap_or_else(|_| Err("the agent's session went away".into())),
        None => std::future::pending().await,
    }
}

impl Relay {
    fn now(&self) -> i64 {
        self.hub.inner.domain.now_ms()
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let reason = 'session: loop {
            let effects = tokio::select! {
                msg = self.inbox.recv() => match msg {
                    Some(RelayMsg::Attach(client, done)) => {
                        let _ = done.send(());
                        self.attach(client).await
                    }
                    Some(RelayMsg::Shutdown) | None => {
                        self.core.end("the server is shutting down".into())
                    }
                },
                answer = opened(&mut self.opening) => {
                    self.opening = None;
                    self.on_opened(answer).await
                }
                frame = agent_frame(&mut self.agent) => self.on_agent_frame(frame).await,
                keys = client_keys(&mut self.client) => self.on_keys(keys).await,
                _ = tick.tick() => {
                    let now = self.now();
                    self.core.tick(now)
                }
                _ = flush.tick() => {
                    self.store_recording().await;
                    Vec::new()
                }
            };
            let mut queue: VecDeque<Effect> = effects.into();
            while let Some(effect) = queue.pop_front() {
                match effect {
                    Effect::OpenAgent { resume_from } => {
                        queue.extend(self.open_agent(resume_from));
                    }
                    Effect::End(reason) => break 'session reason,
                }
            }
            if self.recording.pending_len() >= CHUNK_BYTES {
                self.store_recording().await;
            }
            // (The flush tick stores what is put back after a failure.)
        };
        self.finish(reason).await;
    }

    async fn attach(&mut self, client: Client) -> Vec<Effect> {
        if let Some(old) = self.client.take() {
            let _ = old.events.try_send(ShellEvent::Superseded);
        }
        if let Some(pid) = self.pid {
            let _ = client.events.try_send(ShellEvent::Started { pid });
        }
        if !self.screen.is_empty() {
            let screen: Vec<u8> = self.screen.iter().copied().collect();
            for chunk in screen.chunks(MAX_SHELL_CHUNK) {
                let _ = client.events.try_send(ShellEvent::Output(chunk.to_vec()));
            }
        }
        self.client = Some(client);
        let now = self.now();
        self.core.client_attached(now)
    }

    fn open_agent(&mut self, resume_from: Option<u64>) -> Vec<Effect> {
        let mut channel_id = [0u8; 16];
        channel_id.copy_from_slice(Uuid::new_v4().as_bytes());
        let (reply, answer) = oneshot::channel();
        let request = ChannelRequest {
            channel_id,
            opener: Message::ShellOpen(ShellOpen {
                channel: channel_id,
                grant: self.grant.clone(),
                signature: self.signature.clone(),
                resume_from,
            }),
            reply,
        };
        let delivery = self
            .hub
            .inner
            .router
            .open_channel(self.session.agent_id, request);
        match delivery {
            Delivery::Delivered => {
                self.opening = Some(answer);
                Vec::new()
            }
            // Nothing started yet: there is no shell to come back to.
            Delivery::NotOnThisNode if resume_from.is_none() => self
                .core
                .agent_refused("the agent is not connected to this server"),
            Delivery::NotOnThisNode => {
                let now = self.now();
                self.core.agent_lost(now);
                Vec::new()
            }
        }
    }

    /// The agent's session answered an open: the channel's stream is being opened.
    async fn on_opened(&mut self, answer: Result<AgentChannel, String>) -> Vec<Effect> {
        match answer {
            Ok(channel) => {
                self.agent = Some(channel);
                Vec::new()
            }
            Err(why) if !self.core.is_started() => self.core.agent_refused(&why),
            Err(why) => {
                debug!(session = %self.session.id, %why, "reattach to the agent failed");
                let now = self.now();
                self.core.agent_lost(now);
                Vec::new()
            }
        }
    }

    async fn on_agent_frame(&mut self, frame: Option<Vec<u8>>) -> Vec<Effect> {
        let now = self.now();
        let Some(frame) = frame else {
            // The stream ended without an exit: the connection dropped.
            self.agent = None;
            if !self.core.is_started() {
                return self
                    .core
                    .agent_refused("the agent's stream ended before it answered");
            }
            self.core.agent_lost(now);
            self.send_client(ShellEvent::AgentLost).await;
            return Vec::new();
        };
        let Some(agent) = self.agent.as_mut() else {
            return Vec::new();
        };
        let message = match agent.channel.accept(frame) {
            Ok(message) => message,
            Err(err) => {
                warn!(session = %self.session.id, %err, "refusing a frame on a shell channel");
                return self.core.end(format!(
                    "the agent's channel sent a frame that does not verify: {err}"
                ));
            }
        };
        match message {
            Message::ShellAck(ack) if ack.session_id == self.session.id.into_bytes() => {
                match ack.outcome {
                    ShellOpened::Started { pid } => {
                        self.pid = Some(pid);
                        self.core.agent_opened(now);
                        self.mark_started(now).await;
                        self.send_client(ShellEvent::Started { pid }).await;
                        Vec::new()
                    }
                    ShellOpened::Resumed { .. } => {
                        self.core.agent_opened(now);
                        self.send_client(ShellEvent::Resumed).await;
                        Vec::new()
                    }
                    ShellOpened::Refused(why) => {
                        self.agent = None;
                        self.core.agent_refused(&truncate(why, MAX_REASON_BYTES))
                    }
                }
            }
            Message::ShellOutput(output) if output.data.len() <= MAX_SHELL_CHUNK => {
                let skip = self.core.output(output.offset, output.data.len());
                let fresh = &output.data[skip..];
                if fresh.is_empty() {
                    return Vec::new();
                }
                if self.recording.output(now, fresh).is_err() {
                    return self.core.end(format!(
                        "the recording reached its size cap ({} bytes)",
                        self.hub.inner.settings.recording_cap_bytes
                    ));
                }
                self.screen.extend(fresh);
                let over = self.screen.len().saturating_sub(SCREEN_TAIL_BYTES);
                self.screen.drain(..over);
                self.send_client(ShellEvent::Output(fresh.to_vec())).await;
                Vec::new()
            }
            Message::ShellExit(exit) => {
                self.exit_code = exit.exit_code;
                // The agent ended it; nothing is left to close on its side.
                self.agent = None;
                self.core.end(truncate(exit.reason, MAX_REASON_BYTES))
            }
            other => self.core.end(format!(
                "the agent sent {:?} on a shell channel",
                other.kind()
            )),
        }
    }

    async fn on_keys(&mut self, keys: Option<ShellKeys>) -> Vec<Effect> {
        let now = self.now();
        match keys {
            None => {
                self.client = None;
                self.core.client_detached(now);
                Vec::new()
            }
            Some(ShellKeys::Close) => self.core.end("closed by the operator".into()),
            Some(ShellKeys::Input(data)) => {
                for chunk in data.chunks(MAX_SHELL_CHUNK) {
                    self.core.input(now, chunk.len());
                    let input = Message::ShellInput(ShellInput {
                        data: chunk.to_vec(),
                    });
                    if !self.send_agent(input).await {
                        return self.core.end(STALLED.into());
                    }
                }
                Vec::new()
            }
            Some(ShellKeys::Resize { cols, rows }) => {
                let size = ShellResize { cols, rows };
                if size.is_valid() {
                    if !self.send_agent(Message::ShellResize(size)).await {
                        return self.core.end(STALLED.into());
                    }
                    if self.recording.resize(now, cols, rows).is_err() {
                        return self.core.end("the recording reached its size cap".into());
                    }
                }
                Vec::new()
            }
        }
    }

    /// Seals a message on the agent's channel and sends it; dropped while the channel is down
    /// (keystrokes typed during a cut are lost, as on any terminal). False when the channel
    /// took nothing for [`AGENT_SEND_TIMEOUT`]: the agent no longer reads it.
    async fn send_agent(&mut self, message: Message) -> bool {
        let now = self.now() as u64;
        let Some(agent) = self.agent.as_mut() else {
            return true;
        };
        let frame = agent.channel.seal(message, now);
        match tokio::time::timeout(AGENT_SEND_TIMEOUT, agent.pipe.to_agent.send(frame)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                debug!(session = %self.session.id, "the agent's channel is closing");
                true
            }
            Err(_) => false,
        }
    }

    async fn send_client(&mut self, event: ShellEvent) {
        let Some(client) = &self.client else { return };
        let sent = tokio::time::timeout(CLIENT_SEND_TIMEOUT, client.events.send(event)).await;
        if !matches!(sent, Ok(Ok(()))) {
            // Gone, or too slow to read: the session waits for a reattach.
            self.client = None;
            let now = self.now();
            self.core.client_detached(now);
        }
    }

    async fn mark_started(&mut self, now: i64) {
        let domain = &self.hub.inner.domain;
        let result = async {
            let mut tx = domain.begin().await?;
            tx.start_shell_session(self.session.id, now).await?;
            domain.commit(tx).await
        }
        .await;
        if let Err(err) = result {
            warn!(session = %self.session.id, %err, "could not mark the shell session started");
        }
    }

    /// Stores the recording's next chunk; false if there was none, or its store failed (it is
    /// kept for the next attempt). A chunk already there (a store whose answer was lost) counts
    /// as stored.
    async fn store_recording(&mut self) -> bool {
        let written = self.recording.written();
        let Some((seq, chunk)) = self.recording.take_chunk() else {
            return false;
        };
        let store = &self.hub.inner.domain.store;
        match store
            .append_shell_recording(self.session.id, seq, &chunk, written)
            .await
        {
            Ok(()) | Err(reap3r_store::StoreError::Conflict(_)) => true,
            Err(err) => {
                warn!(session = %self.session.id, %err, "could not store a shell recording chunk");
                self.recording.put_back(seq, chunk);
                false
            }
        }
    }

    /// Stores everything the recording still holds (a few attempts per chunk).
    async fn store_all_recording(&mut self) {
        let mut failures = 0;
        while self.recording.has_unstored() && failures < STORE_ATTEMPTS {
            if !self.store_recording().await {
                failures += 1;
            }
        }
    }

    /// Ends the session: the agent's shell, the socket, the recording, the record and its
    /// audit entry.
    async fn finish(mut self, reason: String) {
        let now = self.now();
        if let Some(mut agent) = self.agent.take() {
            let frame = agent.channel.seal(
                Message::ShellClose(ShellClose {
                    reason: reason.clone(),
                }),
                now as u64,
            );
            // The close must reach the agent before the connection may go (at shutdown):
            // wait, briefly, for its exit (or the stream's end).
            let confirmed = async {
                agent.pipe.to_agent.send(frame).await.ok()?;
                while let Some(frame) = agent.pipe.from_agent.recv().await {
                    if let Ok(Message::ShellExit(_)) = agent.channel.accept(frame) {
                        return Some(());
                    }
                }
                Some(())
            };
            if tokio::time::timeout(EXIT_WAIT, confirmed).await.is_err() {
                debug!(session = %self.session.id, "the agent did not confirm the shell's end");
            }
        }
        self.store_all_recording().await;
        let end = ShellEnd {
            reason: reason.clone(),
            exit_code: self.exit_code,
            bytes_in: self.core.bytes_in(),
            bytes_out: self.core.bytes_out(),
        };
        let recording_bytes = self.recording.written();
        for attempt in 1..=STORE_ATTEMPTS {
            match record_end(&self.hub, &self.session, &end, recording_bytes).await {
                Ok(()) => break,
                // The row stays open until this node restarts (which ends it); once older
                // than a session can live it no longer counts against the limits.
                Err(err) if attempt == STORE_ATTEMPTS => {
                    warn!(session = %self.session.id, %err, "could not record the end of a shell session");
                }
                Err(err) => {
                    debug!(session = %self.session.id, %err, attempt, "recording a shell session's end failed; again");
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
            }
        }
        info!(session = %self.session.id, %reason, bytes_in = end.bytes_in, bytes_out = end.bytes_out, "shell session ended");
        self.send_client(ShellEvent::Ended {
            exit_code: self.exit_code,
            reason,
        })
        .await;
        self.hub.relay_ended(self.session.id);
    }
}
