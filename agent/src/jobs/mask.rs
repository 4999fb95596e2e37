//! Masking secret values in a job's output as it streams: every run of bytes covered by
//! occurrences of the values (overlapping or touching occurrences make one run) becomes `***`,
//! in the live chunks and in the stored result alike, before the output caps count anything.
//!
//! Output arrives in chunks, and a value may be split across them, so a [`Masker`] holds back
//! the tail of what it was given while that tail could still be the start of a value: at most
//! the longest value's length minus one byte. At a position where several values start, the
//! longest wins (a value that is a prefix of another waits until the longer one is decided).
//! [`Masker::finish`] releases what is held at the end of the stream. The result does not
//! depend on how the stream was cut into chunks.
//!
//! Pure: no I/O, no clock. Held bytes and the values are zeroized when dropped.

use zeroize::Zeroizing;

/// What a run of secret bytes is replaced with.
pub(crate) const MASK: &[u8] = b"***";

/// What can be decided at one position of the buffer.
enum At {
    /// The longest value starting here has this length.
    Value(usize),
    /// The rest of the buffer is a proper prefix of a value: wait for more bytes.
    Undecided,
    /// No value starts here.
    Plain,
}

/// A streaming masker for one output stream.
pub(crate) struct Masker {
    /// Non-empty, distinct, longest first.
    values: Vec<Zeroizing<Vec<u8>>>,
    /// Bytes given but not yet released: a possible start of a value.
    held: Zeroizing<Vec<u8>>,
    /// When `Some(n)`, a masked run (already released as `***`) covers the first `n` held bytes
    /// and goes on if a value starts at or before its end.
    open: Option<usize>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("values", &self.values.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// A masker for `values`; empty values are ignored (there is nothing to mask).
    pub(crate) fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut values: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(|v| Zeroizing::new(v.to_vec()))
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.as_slice().cmp(b)));
        values.dedup_by(|a, b| a.as_slice() == b.as_slice());
        Self {
            values,
            held: Zeroizing::new(Vec::new()),
            open: None,
        }
    }

    /// Whether there is anything to mask at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Most bytes this masker ever holds back.
    #[cfg(test)]
    pub(crate) fn max_held(&self) -> usize {
        self.values.first().map_or(0, |v| v.len() - 1)
    }

    /// Feeds the next bytes of the stream; returns what can be released now, masked.
    pub(crate) fn push(&mut self, input: &[u8]) -> Vec<u8> {
        if self.values.is_empty() {
            return input.to_vec();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(input);
        self.scan(&buf, false)
    }

    /// The stream ended: releases what was held, masked.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.held);
        let out = self.scan(&buf, true);
        self.open = None;
        out
    }

    fn at(&self, rest: &[u8], eof: bool) -> At {
        for value in &self.values {
            if rest.starts_with(value) {
                return At::Value(value.len());
            }
            if !eof && rest.len() < value.len() && value.starts_with(rest) {
                return At::Undecided;
            }
        }
        At::Plain
    }

    fn scan(&mut self, buf: &[u8], eof: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        // End (exclusive) of the masked run in progress, if one is.
        let mut masked_to = self.open.take();
        let mut i = 0;
        while i < buf.len() {
            match self.at(&buf[i..], eof) {
                At::Undecided => {
                    self.held.extend_from_slice(&buf[i..]);
                    self.open = masked_to.filter(|&end| end >= i).map(|end| end - i);
                    return out;
                }
                At::Value(len) => {
                    match masked_to {
                        // Overlapping or touching the run in progress: it goes on.
                        Some(end) if i <= end => masked_to = Some(end.max(i + len)),
                        _ => {
                            out.extend_from_slice(MASK);
                            masked_to = Some(i + len);
                        }
                    }
                }
                At::Plain => match masked_to {
                    Some(end) if i < end => {}
                    _ => {
                        masked_to = None;
                        out.push(buf[i]);
                    }
                },
            }
            i += 1;
        }
        // A run reaching the end may go on with the next chunk's first byte.
        self.open = masked_to.filter(|&end| end >= buf.len() && !eof).map(|_| 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Masks `input` fed in chunks cut at `cuts`, checking the hold-back bound on the way.
    fn masked_in(values: &[&str], input: &str, cuts: &[usize]) -> String {
        let mut m = Masker::new(values.iter().map(|v| v.as_bytes()));
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([input.len()].iter()) {
            out.extend(m.push(&input.as_bytes()[from..cut]));
            assert!(m.held.len() <= m.max_held(), "held {} bytes", m.held.len());
            from = cut;
        }
        out.extend(m.finish());
        assert!(m.held.is_empty());
        String::from_utf8(out).unwrap()
    }

    /// Masks `input` whole, then fed in every possible way of two or three chunks, and
    /// byte by byte: the result must not depend on the cuts.
    fn masked(values: &[&str], input: &str) -> String {
        let whole = masked_in(values, input, &[]);
        let n = input.len();
        for a in 0..=n {
            assert_eq!(masked_in(values, input, &[a]), whole, "cut at {a}");
            for b in a..=n {
                assert_eq!(masked_in(values, input, &[a, b]), whole, "cuts at {a}, {b}");
            }
        }
        let bytes: Vec<usize> = (1..n).collect();
        assert_eq!(masked_in(values, input, &bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn values_are_masked_wherever_the_chunks_are_cut() {
        assert_eq!(masked(&["hunter2"], "pw=hunter2\n"), "pw=***\n");
        assert_eq!(masked(&["hunter2"], "hunter2 and hunter2!"), "*** and ***!");
        assert_eq!(masked(&["abc"], "ab abc abab abcc"), "ab *** abab ***c");
        assert_eq!(masked(&["s3"], "no secret here"), "no secret here");
    }

    #[test]
    fn the_longest_value_wins_and_a_prefix_waits_for_it() {
        // "abc" is a prefix of "abcdef": both masked, the longer one as one run.
        assert_eq!(masked(&["abc", "abcdef"], "x abcdef y"), "x *** y");
        assert_eq!(masked(&["abc", "abcdef"], "x abcde y"), "x ***de y");
        assert_eq!(masked(&["abcdef", "abc"], "abcdeabc"), "***de***");
    }

    #[test]
    fn overlapping_and_touching_values_make_one_run() {
        assert_eq!(masked(&["abcd", "cdef"], "[abcdef]"), "[***]");
        assert_eq!(masked(&["aa"], "aaaaa."), "***.");
        assert_eq!(masked(&["ab"], "abab-ab"), "***-***");
        assert_eq!(masked(&["ab", "ba"], "xababax"), "x***x");
    }

    #[test]
    fn the_end_of_the_stream_releases_what_is_held() {
        // The stream ends inside a possible value: those bytes are plain output.
        assert_eq!(masked(&["secret"], "my secre"), "my secre");
        // A value right at the end is masked.
        assert_eq!(masked(&["secret"], "my secret"), "my ***");
        assert_eq!(masked(&["secret"], "secret"), "***");
        assert_eq!(masked(&["secret"], ""), "");
    }

    #[test]
    fn empty_and_repeated_values_are_harmless() {
        assert_eq!(masked(&["", "x"], "axa"), "a***a");
        assert_eq!(masked(&["x", "x"], "xx"), "***");
        let mut none = Masker::new(std::iter::empty());
        assert!(none.is_empty());
        assert_eq!(none.push(b"as is"), b"as is");
        assert_eq!(none.finish(), b"");
    }

    #[test]
    fn held_bytes_never_exceed_the_longest_value_minus_one() {
        let mut m = Masker::new([b"0123456789".as_slice(), b"01".as_slice()]);
        assert_eq!(m.max_held(), 9);
        let out = m.push(b"xx012345678");
        assert_eq!(out, b"xx");
        assert_eq!(m.held.len(), 9);
        assert_eq!(m.push(b"9"), b"***");
        assert_eq!(m.finish(), b"");
    }
}
