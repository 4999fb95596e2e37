//! The tail of a shell's output, numbered by byte offset since the shell started, kept so a
//! channel that reattaches after a cut gets what it missed.

use std::collections::VecDeque;

/// Output bytes kept for a reattach: a few screens of a busy terminal.
pub(crate) const RESUME_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct OutputLog {
    kept: VecDeque<u8>,
    /// Offset of the first kept byte.
    start: u64,
    cap: usize,
}

impl OutputLog {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            kept: VecDeque::new(),
            start: 0,
            cap,
        }
    }

    /// Offset of the next byte the shell writes (all output so far).
    pub(crate) fn end(&self) -> u64 {
        self.start + self.kept.len() as u64
    }

    /// Records output; returns the offset it starts at.
    pub(crate) fn push(&mut self, data: &[u8]) -> u64 {
        let offset = self.end();
        self.kept.extend(data);
        let over = self.kept.len().saturating_sub(self.cap);
        self.kept.drain(..over);
        self.start += over as u64;
        offset
    }

    /// What was written from `offset` on, as far as it is still kept: the offset the bytes
    /// start at (later than `offset` when some are gone) and the bytes.
    pub(crate) fn since(&self, offset: u64) -> (u64, Vec<u8>) {
        let from = offset.clamp(self.start, self.end());
        let skip = (from - self.start) as usize;
        (from, self.kept.iter().skip(skip).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `log.since(offset)` as (start, text).
    fn check(log: &OutputLog, offset: u64, start: u64, text: &str) {
        let (from, bytes) = log.since(offset);
        assert_eq!(
            (from, String::from_utf8_lossy(&bytes).as_ref()),
            (start, text)
        );
    }

    #[test]
    fn it_keeps_the_tail_and_says_where_it_starts() {
        let mut log = OutputLog::new(8);
        assert_eq!(log.push(b"hello "), 0);
        assert_eq!(log.push(b"world"), 6);
        assert_eq!(log.end(), 11);
        check(&log, 0, 3, "lo world");
        check(&log, 6, 6, "world");
        check(&log, 11, 11, "");
        // An offset past the end (a confused peer) gets nothing, from the end.
        check(&log, 99, 11, "");
        log.push(b"0123456789");
        check(&log, 0, 13, "23456789");
    }
}
