//! A shell's recording as asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>): a
//! header line, then one JSON event per line — output (`"o"`) and window sizes (`"r"`). Input
//! is not recorded: what a user types at a prompt that does not echo (a `sudo` password) must
//! not end up stored; what the shell echoes is in the output.
//!
//! The text is stored in chunks, each compressed as a gzip member of its own
//! ([`Recording::take_chunk`]); gzip readers read concatenated members as one file, so the
//! chunks in order are the `.cast.gz` a player opens. A recording has a size cap (uncompressed):
//! past it nothing more is recorded and the session must end ([`CapReached`]).

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

/// Uncompressed text gathered before a chunk is compressed and stored.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The recording is full; the session ends (it may not go on unrecorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapReached;

/// What the header says about the session.
#[derive(Debug, Clone)]
pub struct CastHeader {
    pub cols: u16,
    pub rows: u16,
    pub started_at_ms: i64,
    pub title: String,
}

#[derive(Debug)]
pub struct Recording {
    started_at_ms: i64,
    /// The start of a UTF-8 sequence cut by the end of the last output chunk.
    utf8_tail: Vec<u8>,
    pending: Vec<u8>,
    written: u64,
    cap: u64,
    next_seq: i64,
    full: bool,
    /// Chunks whose store failed, to store again first.
    retry: std::collections::VecDeque<(i64, Vec<u8>)>,
}

impl Recording {
    pub fn new(header: &CastHeader, cap: u64) -> Self {
        let mut recording = Self {
            started_at_ms: header.started_at_ms,
            utf8_tail: Vec::new(),
            pending: Vec::new(),
            written: 0,
            cap,
            next_seq: 0,
            full: false,
            retry: std::collections::VecDeque::new(),
        };
        let line = json!({
            "version": 2,
            "width": header.cols,
            "height": header.rows,
            "timestamp": header.started_at_ms / 1000,
            "title": header.title,
            "env": { "TERM": "xterm-256color" },
        });
        recording.push_line(line.to_string());
        recording
    }

    /// Uncompressed bytes recorded so far (the header included).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Records output the shell wrote at `at_ms`.
    pub fn output(&mut self, at_ms: i64, data: &[u8]) -> Result<(), CapReached> {
        let mut bytes = std::mem::take(&mut self.utf8_tail);
        bytes.extend_from_slice(data);
        let (text, tail) = decode_utf8(&bytes);
        self.utf8_tail = tail;
        if text.is_empty() {
            return self.check_cap();
        }
        self.event(at_ms, "o", &text)
    }

    /// Records a window size change.
    pub fn resize(&mut self, at_ms: i64, cols: u16, rows: u16) -> Result<(), CapReached> {
        self.event(at_ms, "r", &format!("{cols}x{rows}"))
    }

    fn event(&mut self, at_ms: i64, code: &str, data: &str) -> Result<(), CapReached> {
        self.check_cap()?;
        let elapsed = (at_ms.saturating_sub(self.started_at_ms)).max(0) as f64 / 1000.0;
        let line = json!([elapsed, code, data]).to_string();
        if self.written + line.len() as u64 + 1 > self.cap {
            self.full = true;
            return Err(CapReached);
        }
        self.push_line(line);
        Ok(())
    }

    fn check_cap(&self) -> Result<(), CapReached> {
        if self.full { Err(CapReached) } else { Ok(()) }
    }

    fn push_line(&mut self, line: String) {
        self.written += line.len() as u64 + 1;
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
    }

    /// Text waiting to be stored.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether anything is still to store (waiting text, or a chunk put back).
    pub fn has_unstored(&self) -> bool {
        !self.pending.is_empty() || !self.retry.is_empty()
    }

    /// A chunk [`take_chunk`](Self::take_chunk) gave whose store failed: it comes back first.
    pub fn put_back(&mut self, seq: i64, chunk: Vec<u8>) {
        self.retry.push_front((seq, chunk));
    }

    /// The next chunk to store, with its sequence number: one put back, else the waiting text
    /// as a new gzip member; `None` if nothing waits.
    pub fn take_chunk(&mut self) -> Option<(i64, Vec<u8>)> {
        if let Some(chunk) = self.retry.pop_front() {
            return Some(chunk);
        }
        if self.pending.is_empty() {
            return None;
        }
        let text = std::mem::take(&mut self.pending);
        let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 4), Compression::default());
        // Writing to a Vec cannot fail.
        let member = gz
            .write_all(&text)
            .and_then(|()| gz.finish())
            .unwrap_or_default();
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((seq, member))
    }
}

/// `bytes` as text: invalid sequences become U+FFFD; an incomplete sequence at the end is held
/// back (returned as the tail) for the next chunk to complete.
fn decode_utf8(bytes: &[u8]) -> (String, Vec<u8>) {
    let mut text = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                return (text, Vec::new());
            }
            Err(err) => {
                let (valid, after) = rest.split_at(err.valid_up_to());
                // Valid by construction.
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match err.error_len() {
                    Some(n) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[n..];
                    }
                    None => return (text, after.to_vec()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn header() -> CastHeader {
        CastHeader {
            cols: 80,
            rows: 24,
            started_at_ms: 10_000,
            title: "test".into(),
        }
    }

    /// The recording's chunks, concatenated and gunzipped, as lines.
    fn lines(chunks: &[Vec<u8>]) -> Vec<serde_json::Value> {
        let all: Vec<u8> = chunks.concat();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(all.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn chunks_concatenate_into_one_asciicast_file() {
        let mut r = Recording::new(&header(), 1 << 20);
        r.output(10_500, b"hello ").unwrap();
        let first = r.take_chunk().unwrap();
        assert_eq!(first.0, 0);
        assert!(r.take_chunk().is_none());
        r.resize(11_000, 100, 40).unwrap();
        r.output(12_250, b"world\r\n").unwrap();
        let second = r.take_chunk().unwrap();
        assert_eq!(second.0, 1);
        // A chunk whose store failed comes back, then the next one.
        r.put_back(second.0, second.1.clone());
        assert_eq!(r.take_chunk().unwrap(), second);
        assert!(r.take_chunk().is_none());
        let lines = lines(&[first.1, second.1]);
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[0]["timestamp"], 10);
        assert_eq!(lines[1], json!([0.5, "o", "hello "]));
        assert_eq!(lines[2], json!([1.0, "r", "100x40"]));
        assert_eq!(lines[3], json!([2.25, "o", "world\r\n"]));
    }

    #[test]
    fn a_utf8_sequence_cut_between_chunks_is_joined_and_garbage_is_replaced() {
        let mut r = Recording::new(&header(), 1 << 20);
        let euro = "€".as_bytes();
        r.output(10_000, &euro[..1]).unwrap();
        r.output(10_000, &[euro[1], euro[2], b'!', 0xff, b'x'])
            .unwrap();
        let chunk = r.take_chunk().unwrap().1;
        let lines = lines(&[chunk]);
        assert_eq!(lines.len(), 2, "the cut sequence alone records nothing");
        assert_eq!(lines[1][2], "€!\u{fffd}x");
    }

    #[test]
    fn past_the_cap_nothing_more_is_recorded() {
        let mut r = Recording::new(&header(), 200);
        let before = r.written();
        assert!(before < 200);
        assert_eq!(r.output(10_000, &[b'a'; 300]), Err(CapReached));
        assert_eq!(r.written(), before);
        assert_eq!(r.output(10_000, b"b"), Err(CapReached), "stays full");
        assert!(r.written() <= 200);
    }
}
