//! Small numeric helpers: a fast non-cryptographic PRNG for jitter and impairment decisions, and
//! latency summaries.

use std::time::{Duration, Instant};

use serde::Serialize;

/// xorshift64*: plenty for jitter, loss decisions and phases; never used for keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self::seeded(u64::from_le_bytes(seed))
    }

    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n]`.
    pub fn up_to(&mut self, n: u64) -> u64 {
        if n == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (n + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `[0, d]`.
    pub fn duration_up_to(&mut self, d: Duration) -> Duration {
        Duration::from_micros(self.up_to(d.as_micros().min(u64::MAX as u128) as u64))
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

/// Nearest-rank percentile of sorted values (`p` in 0–100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Distribution of a set of samples (milliseconds unless stated otherwise).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let count = values.len();
        let mean = if count == 0 {
            f64::NAN
        } else {
            values.iter().sum::<f64>() / count as f64
        };
        Self {
            count,
            min: values.first().copied().unwrap_or(f64::NAN),
            p50: percentile(&values, 50.0),
            p90: percentile(&values, 90.0),
            p99: percentile(&values, 99.0),
            max: values.last().copied().unwrap_or(f64::NAN),
            mean,
        }
    }
}

/// Milliseconds between two instants (0 if `b` is earlier).
pub fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        let s = Summary::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.p50, s.max, s.count), (1.0, 2.0, 3.0, 3));
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::seeded(42);
        for _ in 0..10_000 {
            assert!(r.up_to(10) <= 10);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(!r.chance(0.0));
    }
}
