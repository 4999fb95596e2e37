//! One task per transfer: it opens a channel to the agent under a fresh grant, runs the sender
//! (a push: [`FileSender`] over the stored file) or the receiver (a pull: [`FileReceiver`] into
//! the partial file), and, when the channel is cut, waits for the agent to come back and opens
//! another from where the receiver stands. At the end it writes the transfer's outcome, the
//! file a pull brought (the organisation now holds it) and the audit entry in one transaction.
//! The decisions about chunks are the wire's pure cores; this file carries them out.

use std::io::SeekFrom;
use std::time::Duration;

use reap3r_store::{FileDirectionRow, FileTransfer, TransferStatus, Uuid};
use reap3r_wire::{
    DoneVerdict, FileAck, FileChunk, FileDirection, FileDone, FileGrant, FileOpen, FileReady,
    FileReceiver, FileSender, Message, Received, SenderStep,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{FileHub, ending};
use crate::shell::truncate;
use crate::{AgentChannel, ChannelRequest, Delivery, FleetEvent};

/// How long a grant lets the agent start the attempt it was signed for.
const GRANT_TTL_MS: i64 = 60_000;
/// How long the agent's session has to open the channel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the agent has to answer an opener, plus the time to hash what a resumed push kept
/// at [`RESUME_HASH_BYTES_PER_S`] (the agent hashes its temporary file before it answers).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A slow disk's read rate (eMMC, a busy HDD), for [`ANSWER_TIMEOUT`].
const RESUME_HASH_BYTES_PER_S: u64 = 10 * 1024 * 1024;
/// Attempts to record a transfer's end before giving up (logged; the row is failed at the
/// node's next start).
const RECORD_ATTEMPTS: u64 = 3;
/// A channel on which the peer sent nothing (and, for a push, took nothing) for this long is
/// taken as cut: QUIC's own idle timeout finds a dead connection; this finds an agent that
/// stopped serving the transfer (its stream's flow control then stops the sends within a few
/// MiB).
const SILENCE: Duration = Duration::from_secs(120);
/// How long an answer may wait for the channel's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between a cut and the next attempt.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often the agent's presence is looked at while a cut transfer waits for it.
const WAIT_STEP: Duration = Duration::from_secs(1);
/// Attempts one transfer makes before it fails.
const MAX_ATTEMPTS: u32 = 50;
/// How often progress is stored and announced, at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Longest reason kept from the agent.
const MAX_REASON_BYTES: usize = 512;
/// Bytes read at once when hashing what a resumed pull kept.
const HASH_PIECE: usize = 1024 * 1024;

/// How an attempt ended.
pub(super) enum Outcome {
    Complete {
        blake3: [u8; 32],
        size: u64,
    },
    /// For good: the agent refused, the file does not verify, the server cannot store it.
    Failed(String),
    /// The channel went away; the next attempt resumes.
    Cut(String),
}

/// Starts the task of a transfer just recorded (its place is reserved in the hub).
pub(super) fn start(hub: &FileHub, transfer: FileTransfer) {
    let hub = hub.clone();
    tokio::spawn(async move {
        let id = transfer.id;
        let driver = Driver {
            hub: hub.clone(),
            transfer: transfer.clone(),
            attempts: 0,
            bytes_done: 0,
            size: transfer.size.map(|s| s as u64),
            published: None,
            stop: hub.inner.stop.subscribe(),
        };
        let (end, bytes_done, attempts) = match tokio::spawn(driver.run()).await {
            Ok(ended) => ended,
            Err(err) => {
                warn!(transfer = %id, %err, "a file transfer task failed");
                let failed = "the server's task for the transfer failed".to_owned();
                (Outcome::Failed(failed), 0, 0)
            }
        };
        for attempt in 1..=RECORD_ATTEMPTS {
            match ending::record_end(&hub, &transfer, &end, bytes_done, attempts).await {
                Ok(()) => break,
                Err(err) if attempt == RECORD_ATTEMPTS => {
                    warn!(transfer = %id, %err, "could not record the end of a file transfer");
                }
                Err(err) => {
                    debug!(transfer = %id, %err, attempt, "recording a transfer's end failed; again");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        hub.transfer_ended(id);
    });
}

struct Driver {
    hub: FileHub,
    transfer: FileTransfer,
    attempts: u32,
    /// What the receiver holds, as last reported.
    bytes_done: u64,
    size: Option<u64>,
    published: Option<Instant>,
    /// Raised once at shutdown: the transfer fails (the next start would fail it anyway).
    stop: watch::Receiver<bool>,
}

const SHUTTING_DOWN: &str = "the server is shutting down";

impl Driver {
    fn now(&self) -> i64 {
        self.hub.inner.domain.now_ms()
    }

    fn is_push(&self) -> bool {
        self.transfer.direction == FileDirectionRow::Push
    }

    async fn run(mut self) -> (Outcome, u64, u32) {
        let mut stop = self.stop.clone();
        let resume_timeout =
            Duration::from_secs(u64::from(self.hub.inner.settings.resume_timeout_s));
        let mut last_progress = Instant::now();
        let mut held_before = self.bytes_done;
        let outcome = loop {
            if *stop.borrow() {
                break Outcome::Failed(SHUTTING_DOWN.into());
            }
            if self.attempts >= MAX_ATTEMPTS {
                break Outcome::Failed(format!("the transfer was cut {MAX_ATTEMPTS} times"));
            }
            // A cut transfer waits for its agent (which reconnects within its backoff).
            while !self.hub.inner.router.holds(self.transfer.agent_id) {
                if last_progress.elapsed() > resume_timeout {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(WAIT_STEP) => {}
                    _ = stop.changed() => break,
                }
            }
            if *stop.borrow() {
                continue;
            }
            if !self.hub.inner.router.holds(self.transfer.agent_id) {
                break Outcome::Failed(format!(
                    "the agent did not come back within {} s",
                    resume_timeout.as_secs()
                ));
            }
            self.attempts += 1;
            // The attempt watches the stop signal itself, between chunks: a transfer that
            // verified is recorded as complete, not cut short by a shutdown.
            let outcome = self.attempt().await;
            match outcome {
                Outcome::Cut(why) => {
                    debug!(transfer = %self.transfer.id, attempt = self.attempts, %why, "file transfer cut; resuming");
                    if self.bytes_done > held_before {
                        held_before = self.bytes_done;
                        last_progress = Instant::now();
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                end => break end,
            }
        };
        (outcome, self.bytes_done, self.attempts)
    }

    /// One channel: the grant, the opener, the agent's first answer, then the push or the pull.
    async fn attempt(&mut self) -> Outcome {
        let settings = &self.hub.inner.settings;
        let now = self.now();
        let push = self.is_push();
        let expected = match (push, self.transfer.blake3.as_deref().map(hex::decode)) {
            (true, Some(Ok(bytes))) => match <[u8; 32]>::try_from(bytes) {
                Ok(hash) => Some(hash),
                Err(_) => return Outcome::Failed("the file's recorded hash is malformed".into()),
            },
            (true, _) => return Outcome::Failed("the file's recorded hash is malformed".into()),
            (false, _) => None,
        };
        let offset = if push { 0 } else { self.kept_of_pull().await };
        let grant = FileGrant {
            transfer_id: self.transfer.id.into_bytes(),
            agent_id: self.transfer.agent_id.into_bytes(),
            direction: if push {
                FileDirection::Push
            } else {
                FileDirection::Pull
            },
            path: self.transfer.path.clone(),
            size: if push { self.size } else { None },
            blake3: expected,
            max_bytes: if push {
                self.size.unwrap_or(0)
            } else {
                settings.max_file_bytes
            },
            rate_limit: if push {
                0
            } else {
                settings.rate_limit_bytes_per_s
            },
            issued_at_ms: now as u64,
            expires_at_ms: (now + GRANT_TTL_MS) as u64,
        };
        let (grant, signature) = grant.sign(&self.hub.inner.server_key);
        let channel_id = Uuid::new_v4().into_bytes();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = ChannelRequest {
            channel_id,
            opener: Message::FileOpen(FileOpen {
                channel: channel_id,
                grant,
                signature: signature.to_vec(),
                offset,
            }),
            reply,
        };
        let delivery = self
            .hub
            .inner
            .router
            .open_channel(self.transfer.agent_id, request);
        if delivery == Delivery::NotOnThisNode {
            return Outcome::Cut("the agent is not connected to this server".into());
        }
        let mut stop = self.stop.clone();
        let opened = tokio::select! {
            opened = tokio::time::timeout(OPEN_TIMEOUT, answer) => opened,
            () = stopped(&mut stop) => return Outcome::Failed(SHUTTING_DOWN.into()),
        };
        let mut agent = match opened {
            Ok(Ok(Ok(agent))) => agent,
            Ok(Ok(Err(why))) => return Outcome::Cut(why),
            _ => return Outcome::Cut("the agent's session did not open the channel".into()),
        };
        let answer_timeout =
            ANSWER_TIMEOUT + Duration::from_secs(self.size.unwrap_or(0) / RESUME_HASH_BYTES_PER_S);
        let first = tokio::select! {
            first = tokio::time::timeout(answer_timeout, agent.pipe.from_agent.recv()) => first,
            () = stopped(&mut stop) => {
                abandon(&mut agent, SHUTTING_DOWN, self.now());
                return Outcome::Failed(SHUTTING_DOWN.into());
            }
        };
        let first = match first {
            Ok(Some(frame)) => frame,
            Ok(None) => return Outcome::Cut("the stream ended before the agent answered".into()),
            Err(_) => return Outcome::Cut("the agent did not answer the opener".into()),
        };
        let answer = match agent.channel.accept(first) {
            Ok(message) => message,
            Err(err) => return refused_frame(&err),
        };
        match answer {
            Message::FileReady(ready) => {
                if let Err(err) = self
                    .hub
                    .inner
                    .domain
                    .store
                    .start_file_attempt(
                        self.transfer.id,
                        i64::from(self.attempts),
                        ready.size.map(|s| s as i64),
                        self.now(),
                    )
                    .await
                {
                    warn!(transfer = %self.transfer.id, %err, "could not record a transfer's attempt");
                }
                let outcome = match expected {
                    Some(hash) => self.push(&mut agent, ready, hash).await,
                    None => self.pull(&mut agent, ready, offset).await,
                };
                // The server gave up on its own (or the agent did: telling it again is
                // harmless): the agent drops what it kept instead of waiting for a resume.
                if let Outcome::Failed(why) = &outcome {
                    abandon(&mut agent, why, self.now());
                }
                outcome
            }
            Message::FileAck(FileAck::Failed(why)) => {
                Outcome::Failed(truncate(why, MAX_REASON_BYTES))
            }
            // A push the agent completed on an earlier attempt (its answer was cut).
            Message::FileAck(FileAck::Complete { blake3 }) if expected == Some(blake3) => {
                Outcome::Complete {
                    blake3,
                    size: self.size.unwrap_or(0),
                }
            }
            other => Outcome::Failed(format!(
                "the agent answered the opener with {:?}",
                other.kind()
            )),
        }
    }

    /// The bytes a pull kept from earlier attempts (whole chunks).
    async fn kept_of_pull(&self) -> u64 {
        let path = self.hub.inner.blobs.partial_path(self.transfer.id);
        let held = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        FileReceiver::resumable(self.hub.inner.settings.max_file_bytes, held)
    }

    /// The receiver reported what it holds.
    async fn progress(&mut self, held: u64) {
        self.bytes_done = self.bytes_done.max(held);
        if self
            .published
            .is_some_and(|at| at.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        self.published = Some(Instant::now());
        let domain = &self.hub.inner.domain;
        if let Err(err) = domain
            .store
            .file_progress(self.transfer.id, self.bytes_done as i64)
            .await
        {
            debug!(transfer = %self.transfer.id, %err, "could not store a transfer's progress");
        }
        domain.events.publish(FleetEvent::FileTransfer {
            transfer_id: self.transfer.id,
            org_id: self.transfer.org_id,
            agent_id: self.transfer.agent_id,
            direction: self.transfer.direction.as_str(),
            status: TransferStatus::Running.as_str(),
            bytes_done: self.bytes_done,
            size: self.size,
            attempts: self.attempts,
            error: None,
        });
    }

    /// A push: the stored file, chunk by chunk from where the agent stands, paced to the rate
    /// limit, then the end; resends go back.
    async fn push(
        &mut self,
        agent: &mut AgentChannel,
        ready: FileReady,
        hash: [u8; 32],
    ) -> Outcome {
        let size = self.size.unwrap_or(0);
        let Some(mut sender) = FileSender::new(size, ready.offset) else {
            return Outcome::Failed(format!(
                "the agent claims {} bytes of a {size}-byte file",
                ready.offset
            ));
        };
        let path = self
            .hub
            .inner
            .blobs
            .path_of(self.transfer.blake3.as_deref().unwrap_or(""));
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) => return Outcome::Failed(format!("the server cannot read the file: {err}")),
        };
        let mut position = 0u64;
        let rate = self.hub.inner.settings.rate_limit_bytes_per_s;
        let paced_from = Instant::now();
        let mut paced_bytes = 0u64;
        let mut heard = Instant::now();
        let mut stop = self.stop.clone();
        loop {
            let has_work = sender.next_chunk().is_some() || sender.done_due();
            let pace_at = (rate > 0 && has_work)
                .then(|| paced_from + Duration::from_secs_f64(paced_bytes as f64 / rate as f64));
            let paced = pace_at.is_none_or(|at| at <= Instant::now());
            tokio::select! {
                biased;
                frame = agent.pipe.from_agent.recv() => {
                    let Some(frame) = frame else {
                        return Outcome::Cut("the stream ended".into());
                    };
                    heard = Instant::now();
                    let ack = match agent.channel.accept(frame) {
                        Ok(Message::FileAck(ack)) => ack,
                        Ok(other) => return Outcome::Failed(format!("the agent sent {:?} on a push", other.kind())),
                        Err(err) => return refused_frame(&err),
                    };
                    if let FileAck::Held { offset } = ack {
                        self.progress(offset).await;
                    }
                    match sender.on_ack(ack) {
                        SenderStep::Continue => {}
                        SenderStep::Complete(got) if got == hash => {
                            return Outcome::Complete { blake3: got, size };
                        }
                        SenderStep::Complete(_) => {
                            return Outcome::Failed("the agent's file does not have the hash pushed".into());
                        }
                        SenderStep::Failed(why) => return Outcome::Failed(truncate(why, MAX_REASON_BYTES)),
                    }
                }
                permit = agent.pipe.to_agent.reserve(), if has_work && paced => {
                    let Ok(permit) = permit else {
                        return Outcome::Cut("the stream is closing".into());
                    };
                    let now = self.now() as u64;
                    if let Some((offset, len)) = sender.next_chunk() {
                        let mut data = vec![0u8; len];
                        let read = async {
                            if position != offset {
                                file.seek(SeekFrom::Start(offset)).await?;
                            }
                            file.read_exact(&mut data).await
                        };
                        if let Err(err) = read.await {
                            return Outcome::Failed(format!("the server cannot read the file: {err}"));
                        }
                        position = offset + len as u64;
                        permit.send(agent.channel.seal(Message::FileChunk(FileChunk::new(offset, data)), now));
                        sender.sent(len);
                        paced_bytes += len as u64;
                        // The stream takes what is sent: the agent reads it (a stuck agent's
                        // flow control stops the sends within a few MiB).
                        heard = Instant::now();
                    } else {
                        let done = FileDone { size, blake3: hash };
                        permit.send(agent.channel.seal(Message::FileDone(done), now));
                        sender.done_sent();
                    }
                }
                () = sleep_until_some(pace_at), if has_work && !paced => {}
                () = tokio::time::sleep_until(heard + SILENCE) => {
                    return Outcome::Cut(format!("the agent sent nothing for {} s", SILENCE.as_secs()));
                }
                () = stopped(&mut stop) => return Outcome::Failed(SHUTTING_DOWN.into()),
            }
        }
    }

    /// A pull: chunks into the partial file from where the server stands (the agent said where
    /// it starts), answers sent back, and the verified file moved into the store.
    async fn pull(&mut self, agent: &mut AgentChannel, ready: FileReady, offset: u64) -> Outcome {
        let cap = self.hub.inner.settings.max_file_bytes;
        let Some(size) = ready.size else {
            return Outcome::Failed("the agent did not say how large the file is".into());
        };
        if size > cap {
            return Outcome::Failed(format!("the file is {size} bytes, over the {cap}-byte cap"));
        }
        if ready.offset > offset {
            return Outcome::Failed(format!(
                "the agent resumes at {}, past the {offset} bytes the server holds",
                ready.offset
            ));
        }
        self.size = Some(size);
        let path = self.hub.inner.blobs.partial_path(self.transfer.id);
        let (mut file, hasher) = match open_partial(&path, ready.offset).await {
            Ok(opened) => opened,
            Err(err) => return Outcome::Failed(format!("the server cannot store the file: {err}")),
        };
        let receiver = FileReceiver::resume_hashed(cap, None, ready.offset, hasher);
        let outcome = self.receive(agent, &mut file, receiver).await;
        // What was written is on its way to the disk before a resume reads the file's length.
        if let Err(err) = file.flush().await {
            debug!(transfer = %self.transfer.id, %err, "could not flush a pull's partial file");
        }
        outcome
    }

    /// A pull's chunks into `file`, until the end verifies (and the file is in the store), the
    /// transfer fails, or the channel is cut.
    async fn receive(
        &mut self,
        agent: &mut AgentChannel,
        file: &mut tokio::fs::File,
        mut receiver: FileReceiver,
    ) -> Outcome {
        let mut heard = Instant::now();
        let mut stop = self.stop.clone();
        loop {
            let frame = tokio::select! {
                frame = agent.pipe.from_agent.recv() => frame,
                () = tokio::time::sleep_until(heard + SILENCE) => {
                    return Outcome::Cut(format!("the agent sent nothing for {} s", SILENCE.as_secs()));
                }
                () = stopped(&mut stop) => return Outcome::Failed(SHUTTING_DOWN.into()),
            };
            let Some(frame) = frame else {
                return Outcome::Cut("the stream ended".into());
            };
            heard = Instant::now();
            let message = match agent.channel.accept(frame) {
                Ok(message) => message,
                Err(err) => return refused_frame(&err),
            };
            let answer = match message {
                Message::FileChunk(chunk) => match receiver.receive(&chunk) {
                    Received::Write { ack, .. } => {
                        if let Err(err) = file.write_all(&chunk.data).await {
                            return Outcome::Failed(format!(
                                "the server cannot store the file: {err}"
                            ));
                        }
                        if let Some(FileAck::Held { offset }) = ack {
                            self.progress(offset).await;
                        }
                        ack
                    }
                    Received::Ack(FileAck::Failed(why)) => return Outcome::Failed(why),
                    Received::Ack(ack) => Some(ack),
                    Received::Nothing => None,
                },
                Message::FileDone(done) => match receiver.on_done(&done) {
                    DoneVerdict::Verified(blake3) => {
                        let stored = async {
                            file.flush().await?;
                            file.sync_all().await?;
                            self.hub
                                .inner
                                .blobs
                                .commit_partial(self.transfer.id, &hex::encode(blake3))
                                .await
                        };
                        if let Err(err) = stored.await {
                            return Outcome::Failed(format!(
                                "the server cannot store the file: {err}"
                            ));
                        }
                        let _ = send_ack(agent, FileAck::Complete { blake3 }, self.now()).await;
                        return Outcome::Complete {
                            blake3,
                            size: done.size,
                        };
                    }
                    DoneVerdict::Refused(mismatch) => return Outcome::Failed(mismatch.to_string()),
                    DoneVerdict::Ignore => None,
                },
                // The agent gave up (the file changed while it was read, a read error).
                Message::FileAck(FileAck::Failed(why)) => {
                    return Outcome::Failed(truncate(why, MAX_REASON_BYTES));
                }
                other => {
                    return Outcome::Failed(format!("the agent sent {:?} on a pull", other.kind()));
                }
            };
            if let Some(ack) = answer
                && !send_ack(agent, ack, self.now()).await
            {
                return Outcome::Cut("the agent stopped reading the channel".into());
            }
        }
    }
}

/// Resolves once the stop signal is raised (never if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Tells the agent the transfer is over (best effort: the channel may be gone or full).
fn abandon(agent: &mut AgentChannel, why: &str, now_ms: i64) {
    let why = truncate(why.to_owned(), MAX_REASON_BYTES);
    let frame = agent
        .channel
        .seal(Message::FileAck(FileAck::Failed(why)), now_ms as u64);
    let _ = agent.pipe.to_agent.try_send(frame);
}

fn refused_frame(err: &reap3r_wire::WireError) -> Outcome {
    Outcome::Failed(format!(
        "the agent's channel sent a frame that does not verify: {err}"
    ))
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Seals and sends an answer; false when the channel took nothing for [`SEND_TIMEOUT`].
async fn send_ack(agent: &mut AgentChannel, ack: FileAck, now_ms: i64) -> bool {
    let frame = agent.channel.seal(Message::FileAck(ack), now_ms as u64);
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, agent.pipe.to_agent.send(frame)).await,
        Ok(Ok(()))
    )
}

/// The partial file of a pull cut to `keep` bytes, with those bytes hashed, positioned at its
/// end.
async fn open_partial(
    path: &std::path::Path,
    keep: u64,
) -> std::io::Result<(tokio::fs::File, blake3::Hasher)> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .await?;
    file.set_len(keep).await?;
    let mut hasher = blake3::Hasher::new();
    let mut piece = vec![0u8; HASH_PIECE];
    let mut left = keep;
    file.seek(SeekFrom::Start(0)).await?;
    while left > 0 {
        let want = left.min(HASH_PIECE as u64) as usize;
        file.read_exact(&mut piece[..want]).await?;
        hasher.update(&piece[..want]);
        left -= want as u64;
    }
    file.seek(SeekFrom::Start(keep)).await?;
    Ok((file, hasher))
}
