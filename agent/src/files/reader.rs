//! A pull: the agent reads `grant.path` and sends it to the server in chunks, paced to the
//! grant's rate.
//!
//! Only a regular file is sent: a device, a FIFO or a socket is refused without reading it (a
//! FIFO is opened `O_NONBLOCK`, so that even opening it does not wait for a writer; /dev/zero
//! would never end). The whole file's hash, for the end, is computed in the background while
//! the chunks go out, so a large file does not wait for a first read through it. A file that
//! shrinks while it is read fails the transfer; one that changes in place fails the server's
//! check of the whole file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reap3r_wire::{
    FILE_CHUNK_BYTES, FileAck, FileChunk, FileDone, FileGrant, FileReady, FileSender, Message,
    SenderStep,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::disk::{self, blocking, kind};
use super::{Cut, Peer};

/// Opens a file to pull: a regular file (a symbolic link to one is followed: the grant names
/// the path the operator meant) of at most `max_bytes`. Returns it with its size.
pub(crate) fn open_pull(path: &Path, max_bytes: u64) -> Result<(File, u64), String> {
    let shown = path.display();
    // Looked at before it is opened: opening a device can do things (a tape rewinds).
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(format!("{shown} is {}", kind(meta.file_type())));
        }
        Ok(_) => {}
        Err(err) => return Err(format!("cannot read {shown}: {err}")),
    }
    // O_NONBLOCK: a FIFO put there since is opened without waiting for a writer; O_NOCTTY: a
    // terminal does not become the agent's (std opens with O_CLOEXEC).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|err| format!("cannot read {shown}: {err}"))?;
    // What was opened is what counts (the path may have changed since it was looked at).
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read {shown}: {err}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is {}", kind(meta.file_type())));
    }
    let size = meta.len();
    if size > max_bytes {
        return Err(format!(
            "{shown} is {size} bytes, more than the transfer's cap of {max_bytes} bytes"
        ));
    }
    Ok((file, size))
}

/// Where a pull starts: what the server holds, within the file, at a chunk boundary (the
/// server keeps whole chunks only, so this is its offset unless the file shrank).
fn pull_start(held: u64, size: u64) -> u64 {
    let at = held.min(size);
    at - at % FILE_CHUNK_BYTES as u64
}

/// Paces a pull to `rate` bytes per second (0: no limit): the bytes after the first `sent` go
/// no earlier than `sent / rate` seconds after the start, so the average never passes the rate
/// and a pause (a slow disk) is not made up for with a burst larger than what it lost.
struct Pacer {
    rate: u64,
    started: Instant,
    sent: u64,
}

impl Pacer {
    fn new(rate: u64, started: Instant) -> Self {
        Self {
            rate,
            started,
            sent: 0,
        }
    }

    /// When the next chunk may go; `None`: at once.
    fn due(&self) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let nanos = u128::from(self.sent) * 1_000_000_000 / u128::from(self.rate);
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        // At most 584 years ahead: within a 64-bit monotonic clock, so never `None` in fact.
        self.started.checked_add(wait)
    }

    fn sent(&mut self, bytes: usize) {
        self.sent = self.sent.saturating_add(bytes as u64);
    }
}

/// The whole file's BLAKE3: computed in the background, kept once known (the end may be sent
/// again after a resend).
enum WholeHash {
    Running {
        task: JoinHandle<io::Result<[u8; 32]>>,
        /// Held only for its drop.
        _abandon: Abandon,
    },
    Known([u8; 32]),
}

/// Tells the background hash to stop when the transfer is gone.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl WholeHash {
    fn start(file: Arc<File>, size: u64) -> Self {
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        let task = tokio::task::spawn_blocking(move || {
            let hasher = disk::hash_prefix(&file, size, || !flag.load(Ordering::Relaxed))?;
            Ok(*hasher.finalize().as_bytes())
        });
        Self::Running {
            task,
            _abandon: Abandon(abandoned),
        }
    }

    async fn get(&mut self) -> io::Result<[u8; 32]> {
        let hash = match self {
            Self::Known(hash) => return Ok(*hash),
            Self::Running { task, .. } => task.await.map_err(io::Error::other)??,
        };
        *self = Self::Known(hash);
        Ok(hash)
    }
}

/// A read that failed, in words: a short one means the file shrank.
fn read_failure(path: &str, err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        format!("{path} changed while it was read")
    } else {
        format!("cannot read {path}: {err}")
    }
}

/// How a pull ends after an answer.
enum Ending {
    /// The server holds the whole file, verified.
    Complete,
    /// The server gave up (it said why; nothing to answer).
    Refused(String),
    /// This side gives up: answered `Failed`.
    Fail(String),
}

/// What the server's message means for the pull; `None`: go on.
fn on_answer(sender: &mut FileSender, message: Message) -> Option<Ending> {
    let Message::FileAck(ack) = message else {
        return Some(Ending::Fail(format!(
            "unexpected {:?} during a pull",
            message.kind()
        )));
    };
    let theirs = matches!(ack, FileAck::Failed(_));
    match sender.on_ack(ack) {
        SenderStep::Continue => None,
        SenderStep::Complete(_) => Some(Ending::Complete),
        SenderStep::Failed(why) if theirs => Some(Ending::Refused(why)),
        SenderStep::Failed(why) => Some(Ending::Fail(why)),
    }
}

async fn end(peer: &mut Peer, path: &str, ending: Ending) -> Result<(), Cut> {
    match ending {
        Ending::Complete => {
            info!(%path, "pulled file delivered");
            Ok(())
        }
        Ending::Refused(why) => {
            warn!(%path, %why, "the server gave up a pull");
            Ok(())
        }
        Ending::Fail(why) => peer.fail(why).await,
    }
}

/// Runs a pull on its channel, from `held` (the bytes the server has already): `Ok` once the
/// last answer was sent or received, `Cut` if the channel ended first.
pub(super) async fn pull(grant: &FileGrant, held: u64, mut peer: Peer) -> Result<(), Cut> {
    let path = grant.path.as_str();
    let opened = {
        let (path, cap) = (grant.path.clone(), grant.max_bytes);
        blocking(move || open_pull(Path::new(&path), cap)).await
    };
    let (file, size) = match opened {
        Ok(opened) => opened,
        Err(why) => return peer.fail(why).await,
    };
    let start = pull_start(held, size);
    let Some(mut sender) = FileSender::new(size, start) else {
        return peer
            .fail(format!("cannot start {path} at byte {start}"))
            .await;
    };
    let file = Arc::new(file);
    let mut whole = WholeHash::start(file.clone(), size);
    peer.send(Message::FileReady(FileReady {
        offset: start,
        size: Some(size),
    }))
    .await?;
    let mut pacer = Pacer::new(grant.rate_limit, Instant::now());
    loop {
        // Answers that came in already (progress, a resend) before the next chunk.
        while let Some(message) = peer.try_recv()? {
            if let Some(ending) = on_answer(&mut sender, message) {
                return end(&mut peer, path, ending).await;
            }
        }
        if let Some((offset, len)) = sender.next_chunk() {
            if let Some(at) = pacer.due() {
                peer.race(tokio::time::sleep_until(at)).await?;
            }
            let read = {
                let (file, path) = (file.clone(), grant.path.clone());
                blocking(move || {
                    disk::read_range(&file, offset, len).map_err(|err| read_failure(&path, &err))
                })
                .await
            };
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(why) => return peer.fail(why).await,
            };
            peer.send(Message::FileChunk(FileChunk::new(offset, bytes)))
                .await?;
            sender.sent(len);
            pacer.sent(len);
        } else if sender.done_due() {
            let blake3 = match peer.race(whole.get()).await? {
                Ok(hash) => hash,
                Err(err) => return peer.fail(read_failure(path, &err)).await,
            };
            peer.send(Message::FileDone(FileDone { size, blake3 }))
                .await?;
            sender.done_sent();
        } else {
            // Everything went out: the server's verdict (or a resend) is next.
            let message = peer.recv().await?;
            if let Some(ending) = on_answer(&mut sender, message) {
                return end(&mut peer, path, ending).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::{AGENT, Server, peer};
    use reap3r_wire::{DoneVerdict, FileDirection, FileReceiver, Received};
    use std::sync::mpsc as std_mpsc;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 17 % 253) as u8).collect()
    }

    fn grant(path: &Path, rate_limit: u64) -> FileGrant {
        FileGrant {
            transfer_id: [0xcd; 16],
            agent_id: AGENT,
            direction: FileDirection::Pull,
            path: path.to_str().unwrap().into(),
            size: None,
            blake3: None,
            max_bytes: 1 << 30,
            rate_limit,
            issued_at_ms: 0,
            expires_at_ms: u64::MAX,
        }
    }

    /// `open_pull` on another thread: a refusal that blocked would fail the test, not hang it.
    fn refusal_within_a_second(path: &Path) -> String {
        let (tx, rx) = std_mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(open_pull(&path, 1 << 30).map(|(_, size)| size));
        });
        rx.recv_timeout(Duration::from_secs(1))
            .expect("open_pull blocked")
            .unwrap_err()
    }

    #[test]
    fn devices_fifos_and_sockets_are_refused_without_blocking() {
        assert_eq!(
            refusal_within_a_second(Path::new("/dev/zero")),
            "/dev/zero is a character device"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert_eq!(
            refusal_within_a_second(&fifo),
            format!("{} is a FIFO", fifo.display())
        );
        // A link to a FIFO is followed, and refused for what it leads to.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert_eq!(
            refusal_within_a_second(&link),
            format!("{} is a FIFO", link.display())
        );
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            refusal_within_a_second(&socket),
            format!("{} is a socket", socket.display())
        );
        assert_eq!(
            refusal_within_a_second(dir.path()),
            format!("{} is a directory", dir.path().display())
        );
        let missing = dir.path().join("missing");
        let why = refusal_within_a_second(&missing);
        assert!(
            why.starts_with(&format!("cannot read {}: ", missing.display())),
            "{why}"
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_within_it_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, data(1000)).unwrap();
        let why = open_pull(&path, 999).err().unwrap();
        assert_eq!(
            why,
            format!(
                "{} is 1000 bytes, more than the transfer's cap of 999 bytes",
                path.display()
            )
        );
        let (_, size) = open_pull(&path, 1000).unwrap();
        assert_eq!(size, 1000);
    }

    #[test]
    fn a_pull_resumes_at_a_chunk_boundary_within_the_file() {
        let c = FILE_CHUNK_BYTES as u64;
        assert_eq!(pull_start(0, 10 * c), 0);
        assert_eq!(pull_start(2 * c + 5, 10 * c), 2 * c);
        // The file shrank below what the server holds.
        assert_eq!(pull_start(8 * c, 3 * c + 7), 3 * c);
    }

    #[test]
    fn the_pace_follows_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1000, start);
        assert_eq!(pacer.due(), Some(start));
        pacer.sent(500);
        assert_eq!(pacer.due(), Some(start + Duration::from_millis(500)));
        let mut unlimited = Pacer::new(0, start);
        unlimited.sent(1 << 40);
        assert_eq!(unlimited.due(), None);
    }

    /// Plays the server of a pull that holds `held`: reads the agent's answer, takes the chunks
    /// (asking once for the chunk at `resend` again, if any), judges the end, answers it.
    /// Returns the agent's first answer and the bytes the server ends up with.
    async fn play(server: &mut Server, held: &[u8], resend: Option<u64>) -> (Message, Vec<u8>) {
        let first = server.from_agent.recv().await.unwrap();
        let Message::FileReady(ready) = &first else {
            return (first, vec![]);
        };
        let (mut receiver, kept) = FileReceiver::resume(1 << 30, None, held);
        assert_eq!(kept, ready.offset);
        let mut stored = held[..kept as usize].to_vec();
        let mut resend = resend;
        while let Some(message) = server.from_agent.recv().await {
            let answer = match message {
                Message::FileChunk(mut chunk) => {
                    if resend == Some(chunk.offset) {
                        resend = None;
                        chunk.data[0] ^= 1;
                    }
                    match receiver.receive(&chunk) {
                        Received::Write { offset, ack } => {
                            assert_eq!(offset, stored.len() as u64);
                            stored.extend_from_slice(&chunk.data);
                            ack
                        }
                        Received::Ack(ack) => Some(ack),
                        Received::Nothing => None,
                    }
                }
                Message::FileDone(done) => match receiver.on_done(&done) {
                    DoneVerdict::Verified(blake3) => Some(FileAck::Complete { blake3 }),
                    DoneVerdict::Refused(why) => Some(FileAck::Failed(why.to_string())),
                    DoneVerdict::Ignore => None,
                },
                other => panic!("unexpected {other:?}"),
            };
            if let Some(answer) = answer {
                let last = matches!(answer, FileAck::Complete { .. } | FileAck::Failed(_));
                server
                    .to_agent
                    .send(Message::FileAck(answer))
                    .await
                    .unwrap();
                if last {
                    break;
                }
            }
        }
        (first, stored)
    }

    #[tokio::test]
    async fn a_pull_sends_the_file_from_what_the_server_holds_and_resends_what_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let all = data(6 * FILE_CHUNK_BYTES + 321);
        fs::write(&path, &all).unwrap();
        let c = FILE_CHUNK_BYTES as u64;
        let held = &all[..2 * FILE_CHUNK_BYTES + 40];
        let (peer, mut server) = peer();
        let (g, from) = (grant(&path, 0), held.len() as u64);
        let task = tokio::spawn(async move { pull(&g, from, peer).await });
        let (first, stored) = play(&mut server, held, Some(4 * c)).await;
        assert_eq!(
            first,
            Message::FileReady(FileReady {
                offset: 2 * c,
                size: Some(all.len() as u64)
            })
        );
        assert_eq!(stored, all);
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_pull_is_paced_to_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let all = data(5 * FILE_CHUNK_BYTES);
        fs::write(&path, &all).unwrap();
        // Ten chunks a second: the fifth goes 0.4 s after the first.
        let (peer, mut server) = peer();
        let g = grant(&path, 10 * FILE_CHUNK_BYTES as u64);
        let started = std::time::Instant::now();
        let task = tokio::spawn(async move { pull(&g, 0, peer).await });
        let (_, stored) = play(&mut server, &[], None).await;
        assert_eq!(stored, all);
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_file_that_shrinks_while_it_is_pulled_fails_the_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, data(3 * FILE_CHUNK_BYTES)).unwrap();
        // Ten chunks a second: the second chunk waits a tenth of a second, and meanwhile the
        // file is cut.
        let (peer, mut server) = peer();
        let g = grant(&path, 10 * FILE_CHUNK_BYTES as u64);
        let task = tokio::spawn(async move { pull(&g, 0, peer).await });
        assert!(matches!(
            server.from_agent.recv().await,
            Some(Message::FileReady(_))
        ));
        assert!(matches!(
            server.from_agent.recv().await,
            Some(Message::FileChunk(_))
        ));
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert_eq!(
            server.from_agent.recv().await,
            Some(Message::FileAck(FileAck::Failed(format!(
                "{} changed while it was read",
                path.display()
            ))))
        );
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_refused_pull_is_answered_failed() {
        let (peer, mut server) = peer();
        let g = grant(Path::new("/dev/zero"), 0);
        let task = tokio::spawn(async move { pull(&g, 0, peer).await });
        assert_eq!(
            server.from_agent.recv().await,
            Some(Message::FileAck(FileAck::Failed(
                "/dev/zero is a character device".into()
            )))
        );
        assert_eq!(task.await.unwrap(), Ok(()));
    }
}
