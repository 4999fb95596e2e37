//! Exponential backoff with full jitter, so a fleet does not reconnect in lockstep.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The next delay: uniform in `[0, min(cap, base * 2^attempt)]`, drawn from `random`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let ceiling = exp.min(self.cap).as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(random % (ceiling + 1))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A delay drawn from the OS random source.
    pub fn next_random(&mut self) -> Duration {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        self.next_delay(u64::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays_within_it() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let ceilings: Vec<u64> = (0..12)
            .map(|_| b.next_delay(u64::MAX).as_millis() as u64)
            .collect();
        // u64::MAX % (c + 1) is not always c, so check bounds rather than exact values.
        let mut c = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        for (i, got) in ceilings.iter().enumerate() {
            let ceiling = (500u64 << i).min(60_000);
            assert!(*got <= ceiling, "attempt {i}: {got} > {ceiling}");
            assert_eq!(
                c.next_delay(ceiling).as_millis() as u64,
                ceiling,
                "attempt {i} reaches its ceiling"
            );
        }
        c.reset();
        assert!(c.next_delay(10_000).as_millis() <= 500);
        assert_eq!(c.next_delay(0), Duration::ZERO);
    }
}
