//! Length-prefixed framing for QUIC streams, with the length capped before any allocation.

use crate::WireError;

/// Largest frame accepted on a stream (header, body and signature).
pub const MAX_FRAME_LEN: usize = 256 * 1024;
/// Largest envelope sent as a QUIC datagram (fits a 1280-byte path MTU after QUIC overhead).
pub const MAX_DATAGRAM_LEN: usize = 1150;

/// Reads the 4-byte big-endian length prefix and checks it against `max` and the minimum
/// envelope size, before the caller allocates a buffer for the frame.
pub fn decode_frame_len(prefix: [u8; 4], max: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    let min = crate::HEADER_LEN + crate::SIGNATURE_LEN;
    if len < min {
        return Err(WireError::Truncated { len, min });
    }
    Ok(len)
}

/// Prefixes `payload` with its length.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Incremental frame splitter for byte streams that arrive in arbitrary pieces.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    max: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete frame, `None` if more bytes are needed, or an error if the
    /// announced length is out of bounds (the stream must then be dropped).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = decode_frame_len(*prefix, self.max)?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }
}
