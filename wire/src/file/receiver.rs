//! The receiving end of a transfer, pure: chunks in order, each one's hash, the cap, the whole
//! file's hash, and what to answer the sender.

use super::{
    FILE_CHUNK_BYTES, FILE_PROGRESS_BYTES, FileAck, FileChunk, FileDone, MAX_FILE_RESENDS,
};

/// What the driver does with a chunk ([`FileReceiver::receive`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Store the chunk's bytes at `offset`; send `ack`, if any (progress).
    Write { offset: u64, ack: Option<FileAck> },
    /// Send this answer (a resend, or the transfer's failure).
    Ack(FileAck),
    /// Nothing to store or send.
    Nothing,
}

/// The whole file's verdict at the sender's end ([`FileReceiver::on_done`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoneVerdict {
    /// It verified: put it in place, then answer `Complete`.
    Verified([u8; 32]),
    /// It does not match: answer `Failed`.
    Refused(FileMismatch),
    /// A resend is outstanding; the sender ends again after it.
    Ignore,
}

/// What the receiver decided about a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Store the chunk's bytes at its offset; everything below `acked` is now held.
    Write { offset: u64, acked: u64 },
    /// Refused: the sender goes on from `resend_from`.
    Resend {
        resend_from: u64,
        reason: &'static str,
    },
    /// A chunk that was held already (sent again after a resend); nothing to do.
    Duplicate,
}

/// Why the whole file is refused at the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileMismatch {
    #[error("the file is {got} bytes, not the {expected} promised")]
    Size { expected: u64, got: u64 },
    #[error("the file's BLAKE3 is not the one promised")]
    Hash,
    #[error("the file is larger than the transfer's cap of {0} bytes")]
    TooLarge(u64),
}

/// The receiving side of a transfer, pure: it takes chunks in order, checks each one's hash and
/// the size cap, hashes the whole file as it goes, and judges it at the end. The driver stores
/// the bytes it is told to and, after a cut, starts a new receiver with [`FileReceiver::resume`]
/// over the bytes it kept.
#[derive(Debug, Clone)]
pub struct FileReceiver {
    next: u64,
    cap: u64,
    expected: Option<(u64, [u8; 32])>,
    hasher: blake3::Hasher,
    /// A resend was asked for and no chunk was written since: the chunks still in flight
    /// behind the refused one are dropped without asking again.
    asking: bool,
    resends: u32,
    reported: u64,
}

impl FileReceiver {
    /// A receiver from byte 0; `expected` is a push's promised size and hash.
    pub fn new(cap: u64, expected: Option<(u64, [u8; 32])>) -> Self {
        Self {
            next: 0,
            cap,
            expected,
            hasher: blake3::Hasher::new(),
            asking: false,
            resends: 0,
            reported: 0,
        }
    }

    /// A receiver that already holds `held` (the file's first bytes, as kept before a cut); it
    /// keeps whole chunks only, so the resume starts at a chunk boundary. Returns it with how
    /// much of `held` it kept.
    pub fn resume(cap: u64, expected: Option<(u64, [u8; 32])>, held: &[u8]) -> (Self, u64) {
        let keep = Self::resumable(cap, held.len() as u64);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&held[..keep as usize]);
        (Self::resume_hashed(cap, expected, keep, hasher), keep)
    }

    /// How many of `held` bytes a resume keeps: whole chunks, within the cap.
    pub fn resumable(cap: u64, held: u64) -> u64 {
        (held - held % FILE_CHUNK_BYTES as u64).min(cap - cap % FILE_CHUNK_BYTES as u64)
    }

    /// A receiver over the first `kept` bytes of the file ([`Self::resumable`]), which the
    /// driver read from its store and fed to `hasher` (a file too large to hold in memory).
    pub fn resume_hashed(
        cap: u64,
        expected: Option<(u64, [u8; 32])>,
        kept: u64,
        hasher: blake3::Hasher,
    ) -> Self {
        let mut receiver = Self::new(cap, expected);
        receiver.hasher = hasher;
        receiver.next = kept;
        receiver.reported = kept;
        receiver
    }

    /// Bytes held so far (where the next chunk starts).
    pub fn offset(&self) -> u64 {
        self.next
    }

    pub fn accept(&mut self, chunk: &FileChunk) -> ChunkVerdict {
        let len = chunk.data.len() as u64;
        let end = chunk.offset.saturating_add(len);
        if chunk.offset < self.next && end <= self.next {
            return ChunkVerdict::Duplicate;
        }
        let resend = |reason| ChunkVerdict::Resend {
            resend_from: self.next,
            reason,
        };
        if chunk.offset != self.next {
            return resend("the chunk does not start where the file stands");
        }
        if chunk.data.is_empty() || chunk.data.len() > FILE_CHUNK_BYTES {
            return resend("a chunk holds 1 to FILE_CHUNK_BYTES bytes");
        }
        if *blake3::hash(&chunk.data).as_bytes() != chunk.hash {
            return resend("the chunk's bytes do not match its hash");
        }
        if end > self.cap || self.expected.is_some_and(|(size, _)| end > size) {
            return resend("the chunk goes past the file's size");
        }
        self.hasher.update(&chunk.data);
        self.next = end;
        ChunkVerdict::Write {
            offset: chunk.offset,
            acked: end,
        }
    }

    /// [`Self::accept`] and what to answer: a progress report every [`FILE_PROGRESS_BYTES`], one
    /// resend per refused chunk (the chunks in flight behind it are dropped quietly), and a
    /// failure after [`MAX_FILE_RESENDS`] refusals.
    pub fn receive(&mut self, chunk: &FileChunk) -> Received {
        match self.accept(chunk) {
            ChunkVerdict::Write { offset, acked } => {
                self.asking = false;
                let ack = (acked - self.reported >= FILE_PROGRESS_BYTES).then(|| {
                    self.reported = acked;
                    FileAck::Held { offset: acked }
                });
                Received::Write { offset, ack }
            }
            ChunkVerdict::Duplicate => Received::Nothing,
            ChunkVerdict::Resend { .. } if self.asking && chunk.offset != self.next => {
                Received::Nothing
            }
            ChunkVerdict::Resend {
                resend_from,
                reason,
            } => {
                self.asking = true;
                self.resends += 1;
                if self.resends > MAX_FILE_RESENDS {
                    return Received::Ack(FileAck::Failed(format!(
                        "{MAX_FILE_RESENDS} chunks were refused; the last: {reason}"
                    )));
                }
                Received::Ack(FileAck::Resend {
                    offset: resend_from,
                    reason: reason.into(),
                })
            }
        }
    }

    /// The sender's end: ignored while a resend is outstanding (the sender comes back with the
    /// chunks, then ends again); otherwise the whole file's verdict.
    pub fn on_done(&self, done: &FileDone) -> DoneVerdict {
        if self.asking {
            return DoneVerdict::Ignore;
        }
        match self.finish((done.size, done.blake3)) {
            Ok(hash) => DoneVerdict::Verified(hash),
            Err(mismatch) => DoneVerdict::Refused(mismatch),
        }
    }

    /// The sender says it sent everything: the whole file is judged against what was promised
    /// (a push) or what the sender claims (a pull: its size and hash). Returns the file's hash.
    pub fn finish(&self, claimed: (u64, [u8; 32])) -> Result<[u8; 32], FileMismatch> {
        let (size, hash) = self.expected.unwrap_or(claimed);
        if self.next > self.cap {
            return Err(FileMismatch::TooLarge(self.cap));
        }
        if self.next != size || self.next != claimed.0 {
            return Err(FileMismatch::Size {
                expected: size,
                got: self.next,
            });
        }
        let got = *self.hasher.finalize().as_bytes();
        if got != hash || got != claimed.1 {
            return Err(FileMismatch::Hash);
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileChunk;

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn chunks(data: &[u8]) -> Vec<FileChunk> {
        data.chunks(FILE_CHUNK_BYTES)
            .enumerate()
            .map(|(i, c)| FileChunk::new((i * FILE_CHUNK_BYTES) as u64, c.to_vec()))
            .collect()
    }

    fn promise(data: &[u8]) -> (u64, [u8; 32]) {
        (data.len() as u64, *blake3::hash(data).as_bytes())
    }

    /// Feeds `chunks` to `r`; the verdicts as text.
    fn check(r: &mut FileReceiver, chunks: &[FileChunk]) -> Vec<String> {
        chunks
            .iter()
            .map(|c| match r.accept(c) {
                ChunkVerdict::Write { acked, .. } => format!("held {acked}"),
                ChunkVerdict::Resend { resend_from, .. } => format!("resend {resend_from}"),
                ChunkVerdict::Duplicate => "dup".into(),
            })
            .collect()
    }

    #[test]
    fn a_file_in_chunks_verifies_and_a_corrupted_chunk_is_sent_again() {
        let data = file(3 * FILE_CHUNK_BYTES + 100);
        let all = chunks(&data);
        let mut r = FileReceiver::new(1 << 30, Some(promise(&data)));
        let mut corrupt = all[1].clone();
        corrupt.data[7] ^= 1;
        let c = FILE_CHUNK_BYTES;
        assert_eq!(
            check(&mut r, &[all[0].clone(), corrupt, all[2].clone()]),
            [
                format!("held {c}"),
                format!("resend {c}"),
                format!("resend {c}")
            ]
        );
        // Sent again from the refused chunk; a repeat of a held chunk changes nothing.
        assert_eq!(
            check(
                &mut r,
                &[
                    all[1].clone(),
                    all[0].clone(),
                    all[2].clone(),
                    all[3].clone()
                ]
            ),
            [
                format!("held {}", 2 * c),
                "dup".into(),
                format!("held {}", 3 * c),
                format!("held {}", data.len())
            ]
        );
        assert_eq!(r.finish(promise(&data)), Ok(promise(&data).1));
    }

    #[test]
    fn a_cut_transfer_resumes_from_the_last_whole_chunk() {
        let data = file(5 * FILE_CHUNK_BYTES);
        let all = chunks(&data);
        // The receiver kept 2.5 chunks' worth when the link was cut.
        let held = &data[..2 * FILE_CHUNK_BYTES + FILE_CHUNK_BYTES / 2];
        let (mut r, from) = FileReceiver::resume(1 << 30, Some(promise(&data)), held);
        assert_eq!(from, 2 * FILE_CHUNK_BYTES as u64);
        for c in &all[2..] {
            assert!(matches!(r.accept(c), ChunkVerdict::Write { .. }));
        }
        assert!(r.finish(promise(&data)).is_ok());
    }

    #[test]
    fn a_wrong_whole_file_or_one_past_its_cap_is_refused() {
        let data = file(2 * FILE_CHUNK_BYTES);
        let all = chunks(&data);
        // Promised another file: every chunk is fine, the whole is not.
        let other = file(2 * FILE_CHUNK_BYTES + 1);
        let mut r = FileReceiver::new(1 << 30, Some((data.len() as u64, promise(&other).1)));
        check(&mut r, &all);
        assert_eq!(r.finish(promise(&data)), Err(FileMismatch::Hash));
        // A pull claims a size it did not send.
        let mut pull = FileReceiver::new(1 << 30, None);
        check(&mut pull, &all[..1]);
        assert!(matches!(
            pull.finish(promise(&data)),
            Err(FileMismatch::Size { .. })
        ));
        // A pull larger than the cap stops at the cap.
        let mut capped = FileReceiver::new(FILE_CHUNK_BYTES as u64, None);
        assert_eq!(
            check(&mut capped, &all),
            [
                format!("held {FILE_CHUNK_BYTES}"),
                format!("resend {FILE_CHUNK_BYTES}")
            ]
        );
        // Empty, oversized or misplaced chunks.
        let mut r = FileReceiver::new(1 << 30, None);
        let empty = FileChunk::new(0, vec![]);
        let big = FileChunk::new(0, vec![0; FILE_CHUNK_BYTES + 1]);
        let ahead = FileChunk::new(5, vec![1]);
        assert_eq!(check(&mut r, &[empty, big, ahead]), ["resend 0"; 3]);
    }

    #[test]
    fn one_resend_per_refused_chunk_and_progress_every_mebibyte() {
        let data = file(40 * FILE_CHUNK_BYTES);
        let all = chunks(&data);
        let mut r = FileReceiver::new(1 << 30, Some(promise(&data)));
        let mut answers = Vec::new();
        let mut say = |got: Received| match got {
            Received::Write { ack: Some(ack), .. } | Received::Ack(ack) => answers.push(ack),
            _ => {}
        };
        let mut bad = all[3].clone();
        bad.hash[0] ^= 1;
        for c in &all[..3] {
            say(r.receive(c));
        }
        say(r.receive(&bad));
        // The chunks in flight behind the refused one: dropped without another resend.
        for c in &all[4..8] {
            say(r.receive(c));
        }
        let done = FileDone {
            size: data.len() as u64,
            blake3: promise(&data).1,
        };
        assert_eq!(r.on_done(&done), DoneVerdict::Ignore);
        // The same chunk refused again is asked for again.
        say(r.receive(&bad));
        for c in &all[3..] {
            say(r.receive(c));
        }
        let resend = FileAck::Resend {
            offset: 3 * FILE_CHUNK_BYTES as u64,
            reason: "the chunk's bytes do not match its hash".into(),
        };
        let held = |chunks: usize| FileAck::Held {
            offset: (chunks * FILE_CHUNK_BYTES) as u64,
        };
        assert_eq!(answers, [resend.clone(), resend, held(32)]);
        assert_eq!(r.on_done(&done), DoneVerdict::Verified(promise(&data).1));
    }

    #[test]
    fn a_sender_that_keeps_sending_bad_chunks_fails_the_transfer() {
        let data = file(FILE_CHUNK_BYTES);
        let mut bad = FileChunk::new(0, data);
        bad.hash[0] ^= 1;
        let mut r = FileReceiver::new(1 << 30, None);
        for _ in 0..MAX_FILE_RESENDS {
            assert!(matches!(
                r.receive(&bad),
                Received::Ack(FileAck::Resend { .. })
            ));
        }
        assert!(matches!(r.receive(&bad), Received::Ack(FileAck::Failed(_))));
    }
}
