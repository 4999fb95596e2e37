//! A push: the server sends a file and the agent writes it to `grant.path`, through a
//! temporary file that is renamed over the destination once the whole file verified
//! ([`super::target`] holds what is done on disk, and why it is safe).
//!
//! A cut transfer leaves its temporary file; the server's resume finds it and goes on from its
//! last whole chunk. A transfer that fails removes it, whichever side gave up: the agent (it
//! answers `Failed`) or the server (its `Failed` is not answered).

use std::sync::Arc;

use reap3r_wire::{
    DoneVerdict, FileAck, FileChunk, FileGrant, FileReady, FileReceiver, Message, Received,
};
use tracing::{info, warn};

use super::disk::{self, blocking};
use super::target::{PushTarget, discard, finish_push, open_temp, prepare_push};
use super::{Cut, FileHost, Peer};

/// Runs a push on its channel: `Ok` once the last answer (`Complete` or `Failed`) was sent or
/// the server gave up, `Cut` if the channel ended first (the temporary file stays for a
/// resume).
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
    let stop = peer.stop_signal();
    let prepared = {
        let (grant, stop) = (grant.clone(), stop.clone());
        blocking(move || {
            let target = prepare_push(&grant)?;
            // A kept file's hash stops once a newer channel takes the transfer over: that one
            // waits for this one to let go of the file before it starts.
            let temp = open_temp(&target, grant.max_bytes, size, || !*stop.borrow())?;
            Ok((target, temp))
        })
        .await
    };
    let (target, temp) = match prepared {
        Ok(prepared) => prepared,
        // Taken over (the hash may have been abandoned for it): the newer channel answers.
        Err(_) if *stop.borrow() => return Err(Cut),
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
            // The server gave up on its own (it shuts down, the transfer had too many attempts):
            // no resume comes for the temporary file, and there is no one to answer.
            Message::FileAck(FileAck::Failed(why)) => {
                warn!(path = %grant.path, %why, "the server gave up a push");
                remove_temp(&target).await;
                return Ok(());
            }
            other => {
                let why = format!("unexpected {:?} during a push", other.kind());
                return give_up(&mut peer, &target, why).await;
            }
        }
    }
}

/// Removes the temporary file of a push that ended without it (no resume comes for it).
async fn remove_temp(target: &Arc<PushTarget>) {
    let target = target.clone();
    let _ = blocking(move || {
        discard(&target);
        Ok(())
    })
    .await;
}

/// Ends a push that failed here: its temporary file is removed, then the failure is answered.
async fn give_up(peer: &mut Peer, target: &Arc<PushTarget>, why: String) -> Result<(), Cut> {
    remove_temp(target).await;
    peer.fail(why).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::target::tests::{data, give_link, grant};
    use crate::files::tests::{Server, host, peer};
    use reap3r_wire::{FILE_CHUNK_BYTES, FileDone, FileSender};
    use std::fs;
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

    #[tokio::test]
    async fn a_push_the_server_gives_up_removes_its_temporary_file_unanswered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let all = data(4 * FILE_CHUNK_BYTES);
        let g = grant(&path, &all);
        let (task, mut server) = spawn_push(&host(), &g);
        let answers = play(&mut server, &all, 2).await;
        assert!(matches!(answers[..], [Message::FileReady(_)]));
        let gave_up = FileAck::Failed("the server shuts down".into());
        server
            .to_agent
            .send(Message::FileAck(gave_up))
            .await
            .unwrap();
        assert_eq!(task.await.unwrap(), Ok(()));
        // Nothing is answered to it (progress, at most, went before).
        while let Some(answer) = server.from_agent.recv().await {
            assert!(
                matches!(answer, Message::FileAck(FileAck::Held { .. })),
                "{answer:?}"
            );
        }
        // The temporary file goes: no resume comes for it.
        assert!(!prepare_push(&g).unwrap().temp.exists());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_resume_taken_over_while_it_hashes_stops_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let all = data(5 * FILE_CHUNK_BYTES);
        let g = grant(&dir.path().join("f"), &all);
        let temp = prepare_push(&g).unwrap().temp;
        let held = 2 * FILE_CHUNK_BYTES + FILE_CHUNK_BYTES / 2;
        fs::write(&temp, &all[..held]).unwrap();
        // A newer channel took the transfer over before the kept file was hashed.
        let (peer, mut server) = peer();
        server.stop.send_replace(true);
        assert_eq!(push(&host(), &g, peer).await, Err(Cut));
        assert!(server.from_agent.try_recv().is_err(), "nothing answered");
        // The hash stopped before the file was cut back to its whole chunks.
        assert_eq!(fs::metadata(&temp).unwrap().len(), held as u64);
    }

    #[tokio::test]
    async fn a_push_under_a_users_link_is_refused_and_under_roots_it_lands() {
        if !crate::files::runs_as_root(module_path!()) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victim = d.join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("passwd"), b"precious").unwrap();
        let theirs = d.join("theirs");
        std::os::unix::fs::symlink(&victim, &theirs).unwrap();
        give_link(&theirs, 65534);
        let all = data(FILE_CHUNK_BYTES + 7);
        let dest = theirs.join("passwd");
        let (task, mut server) = spawn_push(&host(), &grant(&dest, &all));
        let answers = play(&mut server, &all, usize::MAX).await;
        let why = format!(
            "{}: {} is a symbolic link owned by uid 65534",
            dest.display(),
            theirs.display()
        );
        assert_eq!(answers, [Message::FileAck(FileAck::Failed(why))]);
        assert_eq!(task.await.unwrap(), Ok(()));
        assert_eq!(fs::read(victim.join("passwd")).unwrap(), b"precious");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
        // A link of root's, as /lib is on merged-/usr systems, is pushed under.
        let ours = d.join("ours");
        std::os::unix::fs::symlink("victim", &ours).unwrap();
        let (task, mut server) = spawn_push(&host(), &grant(&ours.join("passwd"), &all));
        let answers = play(&mut server, &all, usize::MAX).await;
        assert!(
            matches!(
                answers.last(),
                Some(Message::FileAck(FileAck::Complete { .. }))
            ),
            "{answers:?}"
        );
        assert_eq!(task.await.unwrap(), Ok(()));
        assert_eq!(fs::read(victim.join("passwd")).unwrap(), all);
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
    }
}
