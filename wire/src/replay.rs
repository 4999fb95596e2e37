//! Sliding sequence window: each sequence number is accepted once, reordering is tolerated.

use crate::WireError;

/// How far behind the highest sequence number a late envelope may still arrive.
pub const REPLAY_WINDOW: u64 = 128;

/// Tracks which sequence numbers of one direction of one session were seen.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i` set means `highest - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `seq` would be accepted, without recording it.
    pub fn check(&self, seq: u64) -> Result<(), WireError> {
        if seq == 0 {
            return Err(WireError::Replay(seq));
        }
        if seq > self.highest {
            return Ok(());
        }
        let age = self.highest - seq;
        if age >= REPLAY_WINDOW || self.seen & (1u128 << age) != 0 {
            return Err(WireError::Replay(seq));
        }
        Ok(())
    }

    /// Accepts `seq` once; a repeat or a number older than the window is refused.
    pub fn accept(&mut self, seq: u64) -> Result<(), WireError> {
        self.check(seq)?;
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1u128 << (self.highest - seq);
        }
        Ok(())
    }
}
