//! When a failed delivery is tried again: exponential backoff with jitter, or later if the
//! receiver asked for it (`Retry-After`, capped at the longest backoff), and the dead letter
//! after [`MAX_ATTEMPTS`]. Pure: the random part comes in as an argument.

use reap3r_store::AttemptEnd;

use super::channels::SendReport;

/// Attempts before a notification is dead-lettered.
pub const MAX_ATTEMPTS: i64 = 8;
/// Delay before the second attempt; doubled for each later one.
pub const BASE_BACKOFF_MS: i64 = 5_000;
/// Longest delay between two attempts.
pub const MAX_BACKOFF_MS: i64 = 30 * 60 * 1000;

/// How the notifier retries (the constants above; tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: i64,
    pub base_backoff_ms: i64,
    pub max_backoff_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: MAX_ATTEMPTS,
            base_backoff_ms: BASE_BACKOFF_MS,
            max_backoff_ms: MAX_BACKOFF_MS,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): `base * 2^(attempt-1)`, capped, of
    /// which the upper half is scaled by `jitter` in [0, 1] ("equal jitter"), so receivers that
    /// failed together are not retried together.
    pub fn backoff_ms(&self, attempt: i64, jitter: f64) -> i64 {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .base_backoff_ms
            .saturating_mul(1_i64 << exp)
            .min(self.max_backoff_ms);
        let half = full / 2;
        half + (half as f64 * jitter.clamp(0.0, 1.0)) as i64
    }

    /// How attempt `attempt` (1-based) ended, as the outbox records it.
    pub fn after_attempt(
        &self,
        attempt: i64,
        report: &SendReport,
        now_ms: i64,
        jitter: f64,
    ) -> AttemptEnd {
        if report.delivered {
            return AttemptEnd::Delivered {
                answer: report.answer.clone(),
            };
        }
        let error = format!("attempt {attempt}: {}", report.answer);
        if attempt >= self.max_attempts {
            return AttemptEnd::Dead { error };
        }
        // A receiver that rate-limits says when; sooner would only be refused again.
        let asked = report
            .retry_after_ms
            .unwrap_or(0)
            .clamp(0, self.max_backoff_ms);
        let delay = self.backoff_ms(attempt, jitter).max(asked);
        AttemptEnd::Retry {
            error,
            retry_at: now_ms.saturating_add(delay),
        }
    }
}

/// A jitter in [0, 1] from the OS's random source (0.5 if it fails).
pub fn random_jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> SendReport {
        SendReport {
            delivered: false,
            answer: "HTTP 500 Internal Server Error".into(),
            retry_after_ms: None,
        }
    }

    fn check(
        policy: &RetryPolicy,
        attempt: i64,
        report: &SendReport,
        jitter: f64,
        want: AttemptEnd,
    ) {
        assert_eq!(
            policy.after_attempt(attempt, report, 1_000, jitter),
            want,
            "attempt {attempt}"
        );
    }

    #[test]
    fn failures_back_off_exponentially_then_dead_letter() {
        let p = RetryPolicy::default();
        let e = |n: i64| format!("attempt {n}: HTTP 500 Internal Server Error");
        // No jitter: half the full delay; full jitter: all of it.
        check(
            &p,
            1,
            &failed(),
            0.0,
            AttemptEnd::Retry {
                error: e(1),
                retry_at: 1_000 + 2_500,
            },
        );
        check(
            &p,
            1,
            &failed(),
            1.0,
            AttemptEnd::Retry {
                error: e(1),
                retry_at: 1_000 + 5_000,
            },
        );
        check(
            &p,
            2,
            &failed(),
            1.0,
            AttemptEnd::Retry {
                error: e(2),
                retry_at: 1_000 + 10_000,
            },
        );
        check(
            &p,
            4,
            &failed(),
            1.0,
            AttemptEnd::Retry {
                error: e(4),
                retry_at: 1_000 + 40_000,
            },
        );
        check(
            &p,
            MAX_ATTEMPTS,
            &failed(),
            1.0,
            AttemptEnd::Dead {
                error: e(MAX_ATTEMPTS),
            },
        );
        let ok = SendReport {
            delivered: true,
            answer: "250 ok".into(),
            retry_after_ms: None,
        };
        check(
            &p,
            3,
            &ok,
            0.3,
            AttemptEnd::Delivered {
                answer: "250 ok".into(),
            },
        );
    }

    #[test]
    fn backoff_is_capped_and_jitter_stays_in_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ms(40, 1.0), MAX_BACKOFF_MS);
        assert_eq!(p.backoff_ms(40, 0.0), MAX_BACKOFF_MS / 2);
        for i in 0..100 {
            let j = random_jitter();
            assert!((0.0..=1.0).contains(&j), "{j}");
            let d = p.backoff_ms(1 + i % 10, j);
            assert!(d >= p.backoff_ms(1 + i % 10, 0.0) && d <= p.backoff_ms(1 + i % 10, 1.0));
        }
    }

    #[test]
    fn a_receiver_s_retry_after_delays_the_retry_up_to_the_longest_backoff() {
        let p = RetryPolicy::default();
        let limited = |ms| SendReport {
            delivered: false,
            answer: "HTTP 429 Too Many Requests".into(),
            retry_after_ms: Some(ms),
        };
        let e = "attempt 1: HTTP 429 Too Many Requests".to_owned();
        // Longer than the backoff (2.5–5 s after the first attempt): the receiver's wins.
        check(
            &p,
            1,
            &limited(120_000),
            1.0,
            AttemptEnd::Retry {
                error: e.clone(),
                retry_at: 1_000 + 120_000,
            },
        );
        // Shorter than the backoff: the backoff stands.
        check(
            &p,
            1,
            &limited(1_000),
            1.0,
            AttemptEnd::Retry {
                error: e.clone(),
                retry_at: 1_000 + BASE_BACKOFF_MS,
            },
        );
        // An absurd ask is capped, so a receiver cannot park a notification for ever.
        check(
            &p,
            1,
            &limited(i64::MAX),
            0.0,
            AttemptEnd::Retry {
                error: e,
                retry_at: 1_000 + MAX_BACKOFF_MS,
            },
        );
    }
}
