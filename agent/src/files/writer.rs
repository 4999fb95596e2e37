//! A push: the server sends a file and the agent writes it to `grant.path`.
//!
//! Nothing is written before the destination passed its checks: it is absent or a regular file
//! (never a directory, a symbolic link, a device, a FIFO or a socket: writing one of those is
//! not replacing a file), and its parent is a directory. The bytes go to a temporary file next
//! to the destination, created only by this agent (`O_NOFOLLOW`, mode 0600: nobody reads a
//! half-written file), which is renamed over the destination once the whole file verified, so
//! the destination is either the old file or the new one, never a mix. A cut transfer leaves
//! its temporary file; the server's resume finds it and goes on from its last whole chunk. A
//! transfer that fails removes it.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reap3r_wire::{
    DoneVerdict, FileAck, FileChunk, FileGrant, FileReady, FileReceiver, Message, Received,
};
use tracing::{info, warn};

use super::disk::{self, blocking, kind};
use super::{Cut, FileHost, Peer};

/// Bytes of the destination's name kept in its temporary file's name: a name is at most 255
/// bytes, and the rest of the temporary file's name (`.`, `.reap3r-`, 32 hex digits, `.part`)
/// takes 46.
const TEMP_NAME_PREFIX_BYTES: usize = 160;
/// Mode of the temporary file while it is written.
const TEMP_MODE: u32 = 0o600;
/// Mode of a destination that did not exist before.
const NEW_FILE_MODE: u32 = 0o644;
/// Permission bits a replaced file keeps (setuid, setgid and sticky included).
const MODE_BITS: u32 = 0o7777;

/// Where a push writes: the destination, its directory, and the temporary file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushTarget {
    pub(crate) path: PathBuf,
    pub(crate) parent: PathBuf,
    pub(crate) temp: PathBuf,
}

/// The temporary file, opened, with what it kept of a cut attempt (whole chunks, hashed).
pub(crate) struct TempFile {
    pub(crate) file: File,
    pub(crate) kept: u64,
    pub(crate) hasher: blake3::Hasher,
}

/// The checks before anything is written: the destination is absent or a regular file (not
/// followed if it is a symbolic link), and its parent is a directory. The grant's path was
/// checked already ([`reap3r_wire::check_path`]: absolute, no `.` or `..`).
pub(crate) fn prepare_push(grant: &FileGrant) -> Result<PushTarget, String> {
    let path = Path::new(&grant.path);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(OsStr::to_str))
    else {
        return Err(format!("{} names no file", grant.path));
    };
    // Followed if it is a symbolic link: a parent such as /var/run is one on many systems, and
    // the grant names the directory the operator meant.
    match fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(meta) => {
            return Err(format!(
                "{} is {}, not a directory",
                parent.display(),
                kind(meta.file_type())
            ));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", parent.display()));
        }
        Err(err) => return Err(format!("cannot write {}: {err}", grant.path)),
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(meta) => return Err(format!("{} is {}", grant.path, kind(meta.file_type()))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(format!("cannot write {}: {err}", grant.path)),
    }
    let mut end = name.len().min(TEMP_NAME_PREFIX_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let temp = parent.join(format!(
        ".{}.reap3r-{}.part",
        &name[..end],
        hex::encode(grant.transfer_id)
    ));
    Ok(PushTarget {
        path: path.to_path_buf(),
        parent: parent.to_path_buf(),
        temp,
    })
}

/// Opens (or creates) the temporary file. One that exists is a cut attempt's: it keeps whole
/// chunks only, within the cap and the promised `size`, hashed again (in pieces) so that the
/// end's check covers the whole file, and it is cut back to them.
pub(crate) fn open_temp(target: &PushTarget, cap: u64, size: u64) -> Result<TempFile, String> {
    let temp = target.temp.display();
    let cannot = |err: io::Error| format!("cannot write {}: {err}", target.path.display());
    // O_NOFOLLOW: a symbolic link planted under the temporary file's name is refused, not
    // followed (std opens with O_CLOEXEC).
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(TEMP_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&target.temp)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.file_type().is_file() {
        return Err(format!("{temp} is {}", kind(meta.file_type())));
    }
    // Another user's file under this name could be changed after it verified.
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("{temp} belongs to another user"));
    }
    let kept = FileReceiver::resumable(cap, meta.len()).min(size);
    let hasher = disk::hash_prefix(&file, kept, || true).map_err(cannot)?;
    file.set_len(kept).map_err(cannot)?;
    Ok(TempFile { file, kept, hasher })
}

/// Puts a verified temporary file in place: on disk first, with the destination's mode and
/// owner if it existed (else [`NEW_FILE_MODE`]), renamed over it, and the directory synced so
/// that the rename survives a crash.
pub(crate) fn finish_push(target: &PushTarget, temp: &File) -> Result<(), String> {
    let path = target.path.display();
    let cannot = |err: io::Error| format!("cannot write {path}: {err}");
    temp.sync_all().map_err(cannot)?;
    // Looked at again: what the destination is now is what the file replaces.
    let (mode, owner) = match fs::symlink_metadata(&target.path) {
        Ok(meta) if meta.file_type().is_file() => {
            (meta.mode() & MODE_BITS, Some((meta.uid(), meta.gid())))
        }
        Ok(meta) => return Err(format!("{path} is {}", kind(meta.file_type()))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => (NEW_FILE_MODE, None),
        Err(err) => return Err(cannot(err)),
    };
    if let Some((uid, gid)) = owner {
        let ours = temp.metadata().map_err(cannot)?;
        // Only when it differs: an agent that is not root may own the file and cannot chown.
        if (ours.uid(), ours.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(temp, Some(uid), Some(gid)).map_err(cannot)?;
        }
    }
    // After the owner: a chown clears the setuid and setgid bits.
    temp.set_permissions(Permissions::from_mode(mode))
        .map_err(cannot)?;
    fs::rename(&target.temp, &target.path).map_err(cannot)?;
    File::open(&target.parent)
        .and_then(|dir| dir.sync_all())
        .map_err(cannot)?;
    Ok(())
}

/// Removes the temporary file of a transfer that failed (no resume will come for it).
pub(crate) fn discard(target: &PushTarget) {
    match fs::remove_file(&target.temp) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => warn!(%err, temp = %target.temp.display(), "cannot remove a temporary file"),
    }
}

/// Runs a push on its channel: `Ok` once the last answer (`Complete` or `Failed`) was sent,
/// `Cut` if the channel ended first (the temporary file stays for a resume).
pub(super) async fn push(host: &FileHost, grant: &FileGrant, mut peer: Peer) -> Result<(), Cut> {
    let (Some(size), Some(blake3)) = (grant.size, grant.blake3) else {
        return peer.fail("a push names its size and hash".into()).await;
    };
    // The last answer of a push that completed was lost: it completed, still.
    if host.completed(&grant.transfer_id) == Some(blake3) {
        return peer
            .send(Message::FileAck(FileAck::Complete { blake3 }))
            .await;
    }
    let prepared = {
        let grant = grant.clone();
        blocking(move || {
            let target = prepare_push(&grant)?;
            let temp = open_temp(&target, grant.max_bytes, size)?;
            Ok((target, temp))
        })
        .await
    };
    let (target, temp) = match prepared {
        Ok(prepared) => prepared,
        Err(why) => return peer.fail(why).await,
    };
    let mut receiver = FileReceiver::resume_hashed(
        grant.max_bytes,
        Some((size, blake3)),
        temp.kept,
        temp.hasher,
    );
    if temp.kept > 0 {
        info!(path = %grant.path, kept = temp.kept, "resuming a push");
    }
    let file = Arc::new(temp.file);
    let target = Arc::new(target);
    peer.send(Message::FileReady(FileReady {
        offset: temp.kept,
        size: None,
    }))
    .await?;
    loop {
        match peer.recv().await? {
            Message::FileChunk(chunk) => match receiver.receive(&chunk) {
                Received::Write { offset, ack } => {
                    let FileChunk { data, .. } = chunk;
                    let (file, path) = (file.clone(), grant.path.clone());
                    let written = blocking(move || {
                        disk::write_range(&file, offset, &data)
                            .map_err(|err| format!("cannot write {path}: {err}"))
                    })
                    .await;
                    if let Err(why) = written {
                        return give_up(&mut peer, &target, why).await;
                    }
                    if let Some(ack) = ack {
                        peer.send(Message::FileAck(ack)).await?;
                    }
                }
                Received::Ack(FileAck::Failed(why)) => {
                    return give_up(&mut peer, &target, why).await;
                }
                Received::Ack(ack) => peer.send(Message::FileAck(ack)).await?,
                Received::Nothing => {}
            },
            Message::FileDone(done) => match receiver.on_done(&done) {
                DoneVerdict::Verified(hash) => {
                    let (file, placed) = (file.clone(), target.clone());
                    if let Err(why) = blocking(move || finish_push(&placed, &file)).await {
                        return give_up(&mut peer, &target, why).await;
                    }
                    // Remembered before the answer: if it is lost, the resume is answered.
                    host.remember_completed(grant.transfer_id, hash);
                    info!(path = %grant.path, "pushed file in place");
                    return peer
                        .send(Message::FileAck(FileAck::Complete { blake3: hash }))
                        .await;
                }
                DoneVerdict::Refused(mismatch) => {
                    return give_up(&mut peer, &target, mismatch.to_string()).await;
                }
                DoneVerdict::Ignore => {}
            },
            other => {
                let why = format!("unexpected {:?} during a push", other.kind());
                return give_up(&mut peer, &target, why).await;
            }
        }
    }
}

/// Ends a push that failed: its temporary file is removed (no resume comes for a failed
/// transfer), then the failure is answered.
async fn give_up(peer: &mut Peer, target: &Arc<PushTarget>, why: String) -> Result<(), Cut> {
    let target = target.clone();
    let _ = blocking(move || {
        discard(&target);
        Ok(())
    })
    .await;
    peer.fail(why).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::{AGENT, Server, host, peer};
    use reap3r_wire::{FILE_CHUNK_BYTES, FileDirection, FileDone, FileSender};
    use std::io::Write;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 251) as u8).collect()
    }

    fn grant(path: &Path, data: &[u8]) -> FileGrant {
        FileGrant {
            transfer_id: [0xab; 16],
            agent_id: AGENT,
            direction: FileDirection::Push,
            path: path.to_str().unwrap().into(),
            size: Some(data.len() as u64),
            blake3: Some(*blake3::hash(data).as_bytes()),
            max_bytes: 1 << 30,
            rate_limit: 0,
            issued_at_ms: 0,
            expires_at_ms: u64::MAX,
        }
    }

    fn refusal(path: &Path) -> String {
        prepare_push(&grant(path, b"x")).unwrap_err()
    }

    #[test]
    fn destinations_that_are_not_regular_files_are_refused_with_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sub = d.join("sub");
        fs::create_dir(&sub).unwrap();
        assert_eq!(refusal(&sub), format!("{} is a directory", sub.display()));
        // A link is refused even to a regular file: it is not followed.
        let real = d.join("real");
        fs::write(&real, b"real").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            refusal(&link),
            format!("{} is a symbolic link", link.display())
        );
        assert_eq!(
            refusal(Path::new("/dev/null")),
            "/dev/null is a character device"
        );
        let fifo = d.join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert_eq!(refusal(&fifo), format!("{} is a FIFO", fifo.display()));
        let socket = d.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            refusal(&socket),
            format!("{} is a socket", socket.display())
        );
        let orphan = d.join("missing").join("file");
        assert_eq!(
            refusal(&orphan),
            format!("{} does not exist", d.join("missing").display())
        );
        let under_file = real.join("file");
        assert_eq!(
            refusal(&under_file),
            format!("{} is a regular file, not a directory", real.display())
        );
        // Nothing was written anywhere.
        assert_eq!(fs::read_dir(d).unwrap().count(), 5);
        // A regular file, or none: accepted, with the temporary file next to it.
        let target = prepare_push(&grant(&real, b"x")).unwrap();
        assert_eq!(target.parent, d);
        assert_eq!(
            target.temp,
            d.join(format!(".real.reap3r-{}.part", "ab".repeat(16)))
        );
        assert!(prepare_push(&grant(&d.join("new"), b"x")).is_ok());
    }

    #[test]
    fn a_long_name_keeps_its_temporary_name_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let name = "é".repeat(120); // 240 bytes, two per character
        let target = prepare_push(&grant(&dir.path().join(&name), b"x")).unwrap();
        let temp = target.temp.file_name().unwrap().len();
        assert!(temp <= 255, "{temp}");
        let temp = open_temp(&target, 1 << 30, 1).unwrap();
        assert_eq!(temp.kept, 0);
    }

    #[test]
    fn a_resume_keeps_whole_chunks_only_and_cuts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let all = data(5 * FILE_CHUNK_BYTES);
        let g = grant(&dir.path().join("f"), &all);
        let target = prepare_push(&g).unwrap();
        let held = 2 * FILE_CHUNK_BYTES + FILE_CHUNK_BYTES / 2;
        fs::write(&target.temp, &all[..held]).unwrap();
        let temp = open_temp(&target, g.max_bytes, all.len() as u64).unwrap();
        let two = 2 * FILE_CHUNK_BYTES;
        assert_eq!(temp.kept, two as u64);
        assert_eq!(temp.hasher.finalize(), blake3::hash(&all[..two]));
        assert_eq!(fs::metadata(&target.temp).unwrap().len(), two as u64);
        // Within the cap too.
        let temp = open_temp(&target, FILE_CHUNK_BYTES as u64 + 1, all.len() as u64).unwrap();
        assert_eq!(temp.kept, FILE_CHUNK_BYTES as u64);
        // A fresh temporary file is only ours to read.
        fs::remove_file(&target.temp).unwrap();
        let temp = open_temp(&target, g.max_bytes, all.len() as u64).unwrap();
        assert_eq!(temp.kept, 0);
        let mode = fs::metadata(&target.temp).unwrap().mode() & MODE_BITS;
        assert_eq!(mode, TEMP_MODE);
    }

    #[test]
    fn a_link_planted_as_the_temporary_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let target = prepare_push(&grant(&dir.path().join("f"), b"x")).unwrap();
        std::os::unix::fs::symlink(&victim, &target.temp).unwrap();
        let why = open_temp(&target, 1 << 30, 1).err().unwrap();
        assert!(why.starts_with("cannot write"), "{why}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_verified_push_replaces_the_file_keeping_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(&path, Some(1234), Some(4321)).unwrap();
        }
        let target = prepare_push(&grant(&path, b"new")).unwrap();
        let mut temp = open_temp(&target, 1 << 30, 3).unwrap();
        temp.file.write_all(b"new").unwrap();
        finish_push(&target, &temp.file).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & MODE_BITS, 0o640);
        if root {
            assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
        }
        assert!(!target.temp.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A file that did not exist gets the usual mode.
        let fresh = dir.path().join("fresh");
        let target = prepare_push(&grant(&fresh, b"")).unwrap();
        let temp = open_temp(&target, 1 << 30, 0).unwrap();
        finish_push(&target, &temp.file).unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().mode() & MODE_BITS,
            NEW_FILE_MODE
        );
    }

    /// Plays the server of a push of `data`: reads the agent's first answer, sends chunks from
    /// where it said (at most `limit`, then stops there), then the end; returns the answers.
    async fn play(server: &mut Server, data: &[u8], limit: usize) -> Vec<Message> {
        let first = server.from_agent.recv().await.unwrap();
        let Message::FileReady(ready) = &first else {
            return vec![first];
        };
        let mut sender = FileSender::new(data.len() as u64, ready.offset).unwrap();
        let mut answers = vec![first.clone()];
        let mut sent = 0;
        while let Some((offset, len)) = sender.next_chunk() {
            if sent == limit {
                return answers;
            }
            let bytes = data[offset as usize..][..len].to_vec();
            let chunk = Message::FileChunk(FileChunk::new(offset, bytes));
            server.to_agent.send(chunk).await.unwrap();
            sender.sent(len);
            sent += 1;
        }
        let done = FileDone {
            size: data.len() as u64,
            blake3: *blake3::hash(data).as_bytes(),
        };
        server.to_agent.send(Message::FileDone(done)).await.unwrap();
        while let Some(answer) = server.from_agent.recv().await {
            let last = matches!(
                answer,
                Message::FileAck(FileAck::Complete { .. } | FileAck::Failed(_))
            );
            answers.push(answer);
            if last {
                break;
            }
        }
        answers
    }

    fn spawn_push(
        host: &FileHost,
        grant: &FileGrant,
    ) -> (tokio::task::JoinHandle<Result<(), Cut>>, Server) {
        let (peer, server) = peer();
        let (host, grant) = (host.clone(), grant.clone());
        (
            tokio::spawn(async move { push(&host, &grant, peer).await }),
            server,
        )
    }

    #[tokio::test]
    async fn a_cut_push_resumes_where_it_stood_and_a_repeat_is_answered_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let all = data(5 * FILE_CHUNK_BYTES + 123);
        let g = grant(&path, &all);
        let host = host();
        // First attempt: three chunks, then the channel is cut.
        let (task, mut server) = spawn_push(&host, &g);
        let answers = play(&mut server, &all, 3).await;
        assert_eq!(
            answers,
            [Message::FileReady(FileReady {
                offset: 0,
                size: None
            })]
        );
        // The stream ends after them (what was sent is still read).
        let Server {
            to_agent,
            from_agent,
            ..
        } = server;
        drop(to_agent);
        assert_eq!(task.await.unwrap(), Err(Cut));
        drop(from_agent);
        let temp = prepare_push(&g).unwrap().temp;
        assert_eq!(
            fs::metadata(&temp).unwrap().len(),
            3 * FILE_CHUNK_BYTES as u64
        );
        assert!(!path.exists());
        // The resume starts after them and completes.
        let (task, mut server) = spawn_push(&host, &g);
        let answers = play(&mut server, &all, usize::MAX).await;
        let hash = *blake3::hash(&all).as_bytes();
        assert_eq!(
            answers,
            [
                Message::FileReady(FileReady {
                    offset: 3 * FILE_CHUNK_BYTES as u64,
                    size: None
                }),
                Message::FileAck(FileAck::Complete { blake3: hash }),
            ]
        );
        assert_eq!(task.await.unwrap(), Ok(()));
        assert_eq!(fs::read(&path).unwrap(), all);
        assert!(!temp.exists());
        // Its last answer lost, the server asks again: complete, without a byte sent.
        let (task, mut server) = spawn_push(&host, &g);
        let answers = play(&mut server, &all, 0).await;
        assert_eq!(
            answers,
            [Message::FileAck(FileAck::Complete { blake3: hash })]
        );
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_file_that_does_not_match_its_promise_is_removed_and_the_old_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let promised = data(2 * FILE_CHUNK_BYTES);
        let mut sent = promised.clone();
        sent[FILE_CHUNK_BYTES + 9] ^= 1;
        let g = grant(&path, &promised);
        let (task, mut server) = spawn_push(&host(), &g);
        let answers = play(&mut server, &sent, usize::MAX).await;
        assert_eq!(
            answers.last(),
            Some(&Message::FileAck(FileAck::Failed(
                "the file's BLAKE3 is not the one promised".into()
            )))
        );
        assert_eq!(task.await.unwrap(), Ok(()));
        assert!(!prepare_push(&g).unwrap().temp.exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[tokio::test]
    async fn a_refused_destination_is_answered_failed_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let g = grant(dir.path(), b"x");
        let (task, mut server) = spawn_push(&host(), &g);
        let answers = play(&mut server, b"x", usize::MAX).await;
        assert_eq!(
            answers,
            [Message::FileAck(FileAck::Failed(format!(
                "{} is a directory",
                dir.path().display()
            )))]
        );
        assert_eq!(task.await.unwrap(), Ok(()));
    }
}
