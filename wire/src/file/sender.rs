//! The sending end of a transfer, pure: where the next chunk starts, when the end is due, and
//! what the receiver's answers mean (go back for a resend, done, failed). The driver reads the
//! bytes it is told to, seals them, and paces them.

use super::{FILE_CHUNK_BYTES, FileAck, MAX_FILE_RESENDS};

/// What the driver does after an answer ([`FileSender::on_ack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderStep {
    /// Go on sending (from [`FileSender::next_chunk`], which a resend moved back).
    Continue,
    /// The receiver holds the whole file, verified: its BLAKE3.
    Complete([u8; 32]),
    /// The receiver gave up, or asked for more resends than allowed: why.
    Failed(String),
}

/// The sender of one attempt: it starts where the receiver said it stands.
#[derive(Debug, Clone)]
pub struct FileSender {
    size: u64,
    next: u64,
    done_sent: bool,
    resends: u32,
    held: u64,
}

impl FileSender {
    /// A sender of a `size`-byte file whose receiver holds `from` bytes (`None` when `from` is
    /// past the end: the receiver claims more than there is).
    pub fn new(size: u64, from: u64) -> Option<Self> {
        (from <= size).then_some(Self {
            size,
            next: from,
            done_sent: false,
            resends: 0,
            held: from,
        })
    }

    /// The next chunk to send (its offset and length), or `None` once everything was sent.
    pub fn next_chunk(&self) -> Option<(u64, usize)> {
        (self.next < self.size).then(|| {
            let len = (self.size - self.next).min(FILE_CHUNK_BYTES as u64);
            (self.next, len as usize)
        })
    }

    /// The chunk [`Self::next_chunk`] named was sent.
    pub fn sent(&mut self, len: usize) {
        self.next = (self.next + len as u64).min(self.size);
    }

    /// Everything was sent and the end (`FileDone`) is still to go.
    pub fn done_due(&self) -> bool {
        self.next == self.size && !self.done_sent
    }

    pub fn done_sent(&mut self) {
        self.done_sent = true;
    }

    /// The most the receiver said it holds.
    pub fn held(&self) -> u64 {
        self.held
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn on_ack(&mut self, ack: FileAck) -> SenderStep {
        match ack {
            FileAck::Held { offset } => {
                self.held = self.held.max(offset.min(self.size));
                SenderStep::Continue
            }
            FileAck::Resend { offset, reason } => {
                self.resends += 1;
                if self.resends > MAX_FILE_RESENDS {
                    return SenderStep::Failed(format!(
                        "the receiver refused {MAX_FILE_RESENDS} chunks; the last: {reason}"
                    ));
                }
                if offset > self.next.max(self.held) || offset > self.size {
                    return SenderStep::Failed(format!(
                        "the receiver asked for bytes from {offset}, past what was sent"
                    ));
                }
                self.next = offset;
                self.done_sent = false;
                SenderStep::Continue
            }
            FileAck::Complete { blake3 } => SenderStep::Complete(blake3),
            FileAck::Failed(why) => SenderStep::Failed(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DoneVerdict, FileChunk, FileDone, FileReceiver, Received};

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// Runs one attempt of a transfer of `data` from a receiver holding `held`, through a link
    /// that corrupts the chunks whose sequence numbers (counted from 0, resends included) are in
    /// `corrupt` and carries `in_flight` chunks before the sender sees an answer. Returns the
    /// outcome, the receiver's bytes and how many chunks were sent.
    fn check(
        data: &[u8],
        held: &[u8],
        corrupt: &[usize],
        in_flight: usize,
    ) -> (SenderStep, Vec<u8>, usize) {
        let expected = Some((data.len() as u64, *blake3::hash(data).as_bytes()));
        let (mut receiver, kept) = FileReceiver::resume(1 << 30, expected, held);
        let mut stored = held[..kept as usize].to_vec();
        let mut sender = FileSender::new(data.len() as u64, kept).expect("within the file");
        let mut link: std::collections::VecDeque<Result<FileChunk, FileDone>> = Default::default();
        let mut answers = std::collections::VecDeque::new();
        let mut sent = 0;
        loop {
            while link.len() < in_flight {
                if let Some((offset, len)) = sender.next_chunk() {
                    let start = offset as usize;
                    let mut chunk = FileChunk::new(offset, data[start..start + len].to_vec());
                    if corrupt.contains(&sent) {
                        chunk.data[0] ^= 0xff;
                    }
                    sent += 1;
                    sender.sent(len);
                    link.push_back(Ok(chunk));
                } else if sender.done_due() {
                    sender.done_sent();
                    link.push_back(Err(FileDone {
                        size: data.len() as u64,
                        blake3: *blake3::hash(data).as_bytes(),
                    }));
                } else {
                    break;
                }
            }
            match link.pop_front() {
                Some(Ok(chunk)) => match receiver.receive(&chunk) {
                    Received::Write { offset, ack } => {
                        assert_eq!(offset as usize, stored.len());
                        stored.extend_from_slice(&chunk.data);
                        answers.extend(ack);
                    }
                    Received::Ack(ack) => answers.push_back(ack),
                    Received::Nothing => {}
                },
                Some(Err(done)) => match receiver.on_done(&done) {
                    DoneVerdict::Verified(blake3) => {
                        answers.push_back(FileAck::Complete { blake3 })
                    }
                    DoneVerdict::Refused(why) => {
                        answers.push_back(FileAck::Failed(why.to_string()))
                    }
                    DoneVerdict::Ignore => {}
                },
                None if answers.is_empty() => panic!("the transfer stalled"),
                None => {}
            }
            while let Some(ack) = answers.pop_front() {
                match sender.on_ack(ack) {
                    SenderStep::Continue => {}
                    // What was still in flight is of an attempt that ended.
                    end => return (end, stored, sent),
                }
            }
        }
    }

    #[test]
    fn a_clean_transfer_sends_each_chunk_once() {
        let data = file(10 * FILE_CHUNK_BYTES + 3);
        let (end, stored, sent) = check(&data, &[], &[], 8);
        assert_eq!(end, SenderStep::Complete(*blake3::hash(&data).as_bytes()));
        assert_eq!(stored, data);
        assert_eq!(sent, 11);
    }

    #[test]
    fn corrupted_chunks_are_sent_again_and_the_file_still_verifies() {
        let data = file(50 * FILE_CHUNK_BYTES);
        // Chunk 4, the resend of chunk 4 (the 4 chunks in flight behind it do not count), and
        // the last chunk.
        let (end, stored, sent) = check(&data, &[], &[4, 12, 61], 4);
        assert_eq!(end, SenderStep::Complete(*blake3::hash(&data).as_bytes()));
        assert_eq!(stored, data);
        assert!(sent > 50, "{sent}");
    }

    #[test]
    fn a_resumed_transfer_sends_only_what_the_receiver_lacks() {
        let data = file(20 * FILE_CHUNK_BYTES + 10);
        let held = &data[..12 * FILE_CHUNK_BYTES + 100];
        let (end, stored, sent) = check(&data, held, &[], 3);
        assert_eq!(end, SenderStep::Complete(*blake3::hash(&data).as_bytes()));
        assert_eq!(stored, data);
        assert_eq!(sent, 9);
        // A receiver that holds different first bytes: the whole file does not verify.
        let mut other = held.to_vec();
        other[5] ^= 1;
        let (end, _, _) = check(&data, &other, &[], 3);
        assert!(matches!(end, SenderStep::Failed(_)), "{end:?}");
    }

    #[test]
    fn answers_that_make_no_sense_fail_the_attempt() {
        assert!(FileSender::new(10, 11).is_none());
        let mut sender = FileSender::new(100_000, 0).unwrap();
        sender.sent(FILE_CHUNK_BYTES);
        let past = FileAck::Resend {
            offset: 90_000,
            reason: "x".into(),
        };
        assert!(matches!(sender.on_ack(past), SenderStep::Failed(_)));
        let mut sender = FileSender::new(100_000, 0).unwrap();
        for _ in 0..MAX_FILE_RESENDS {
            let again = FileAck::Resend {
                offset: 0,
                reason: "x".into(),
            };
            assert_eq!(sender.on_ack(again), SenderStep::Continue);
        }
        let last = FileAck::Resend {
            offset: 0,
            reason: "x".into(),
        };
        assert!(matches!(sender.on_ack(last), SenderStep::Failed(_)));
    }
}
