//! Exponential backoff with full jitter, so a fleet does not reconnect in lockstep.

use std::time::Duration;

/// Refusals (since the last live session) answered with a short retry before the exponential
/// backoff takes over.
pub const QUICK_RETRIES: u32 = 8;
/// Upper bound of a short retry after a refusal.
pub const QUICK_RETRY_MAX: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    refusals: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
            refusals: 0,
        }
    }

    /// The next delay after the server refused the connection outright (its endpoint is up but
    /// not accepting: shutting down, starting, or shedding load). A restart takes seconds, so
    /// the first [`QUICK_RETRIES`] refusals since the last [`reset`](Self::reset) are retried
    /// within [`QUICK_RETRY_MAX`] (jittered); then the exponential backoff continues where it was.
    pub fn next_delay_refused(&mut self, random: u64) -> Duration {
        self.refusals = self.refusals.saturating_add(1);
        if self.refusals > QUICK_RETRIES {
            return self.next_delay(random);
        }
        Duration::from_millis(random % (QUICK_RETRY_MAX.as_millis() as u64 + 1))
    }

    /// [`next_delay_refused`](Self::next_delay_refused) drawn from the OS random source.
    pub fn next_random_refused(&mut self) -> Duration {
        self.next_delay_refused(os_random())
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
        self.refusals = 0;
    }

    /// A delay drawn from the OS random source.
    pub fn next_random(&mut self) -> Duration {
        self.next_delay(os_random())
    }
}

fn os_random() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
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

    #[test]
    fn refusals_retry_quickly_then_fall_back_to_the_exponential_backoff() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        // Two ordinary failures first: the exponential attempt count is kept across refusals.
        b.next_delay(0);
        b.next_delay(0);
        for i in 0..QUICK_RETRIES {
            let d = b.next_delay_refused(1_000);
            assert_eq!(d, QUICK_RETRY_MAX, "refusal {i} is a short retry");
        }
        // The ninth refusal backs off as the third failure: up to 500 ms × 2².
        assert_eq!(b.next_delay_refused(2_000), Duration::from_millis(2_000));
        assert_eq!(b.next_delay(4_000), Duration::from_millis(4_000));
        b.reset();
        assert_eq!(b.next_delay_refused(700), Duration::from_millis(700));
    }
}
