//! Rate limits per credential: one token bucket per API key, per login session and (for
//! requests that carry no valid credential) per client address. **Pure**: the bucket map takes
//! `now_ms` as input and answers allow, or refuse with the seconds until a request would pass;
//! the guard owns one map behind a mutex and reads the clock.
//!
//! Memory is bounded: at most [`MAX_BUCKETS`] buckets. When the map is full, a sweep first drops
//! every bucket that has refilled to its burst (it holds nothing a fresh bucket would not), then,
//! if that freed too little, the buckets idle longest, down to [`SWEEP_TO`]; a sweep frees at
//! least `MAX_BUCKETS - SWEEP_TO` slots, so a flood of distinct keys costs O(1) per request
//! amortised and never grows the map. A key evicted before it refilled starts again with a full
//! burst: eviction can only make a limit more lenient, never refuse anyone.
//!
//! Rates are integers in thousandths of a request a second and token amounts in millionths of a
//! request, so a refill (milliseconds × rate) and a retry-after are exact and the same on every
//! run.

use std::collections::HashMap;
use std::net::IpAddr;

use reap3r_store::Uuid;

/// The most buckets kept at once (~64 bytes each with the map's overhead: a few MiB at most).
pub const MAX_BUCKETS: usize = 100_000;

/// What a sweep of a full map shrinks it to, at most: it frees at least an eighth.
const SWEEP_TO: usize = MAX_BUCKETS - MAX_BUCKETS / 8;

/// One request, in the buckets' unit (millionths).
const REQUEST: u64 = 1_000_000;

/// The configured rate: `milli_per_s` thousandths of a request a second sustained (so
/// 50 req/s is 50 000, one request a minute 17), up to `burst` requests at once. A rate of 0
/// turns rate limiting off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub milli_per_s: u64,
    pub burst: u32,
}

impl RateSettings {
    /// Defaults no operator UI or ordinary script reaches: a page load is a few dozen requests,
    /// a polling UI a few a second.
    pub const DEFAULT: RateSettings = RateSettings {
        milli_per_s: 50_000,
        burst: 200,
    };

    pub fn enabled(&self) -> bool {
        self.milli_per_s > 0 && self.burst > 0
    }
}

impl Default for RateSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    ApiKey(Uuid),
    Session(Uuid),
    /// A client address, for requests without a valid credential. IPv6 addresses count by
    /// their /64, the block one subscriber gets, so a host cannot mint fresh budgets.
    Address(IpAddr),
    /// A peer whose address is unknown (not a TCP socket): all such share one budget.
    Unknown,
}

impl RateKey {
    /// The key for a client address (IPv6 masked to its /64; IPv4-mapped IPv6 as IPv4).
    pub fn address(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => RateKey::Address(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => RateKey::Address(IpAddr::V4(v4)),
                None => {
                    let masked = u128::from(v6) & (u128::MAX << 64);
                    RateKey::Address(IpAddr::V6(masked.into()))
                }
            },
        }
    }

    /// The metrics label of this kind of key.
    pub fn kind(&self) -> RateKind {
        match self {
            RateKey::ApiKey(_) => RateKind::ApiKey,
            RateKey::Session(_) => RateKind::Session,
            RateKey::Address(_) | RateKey::Unknown => RateKind::Address,
        }
    }
}

/// The kinds of budget, as metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    ApiKey,
    Session,
    Address,
}

impl RateKind {
    pub const ALL: [RateKind; 3] = [RateKind::ApiKey, RateKind::Session, RateKind::Address];

    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::ApiKey => "api_key",
            RateKind::Session => "session",
            RateKind::Address => "address",
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit: the next request passes in this many seconds (rounded up, at least 1).
    Limited {
        retry_after_s: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a request left.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    updated_ms: i64,
}

/// The buckets of every key seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateSettings,
    buckets: HashMap<RateKey, Bucket>,
}

impl RateLimiter {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            settings,
            buckets: HashMap::new(),
        }
    }

    pub fn settings(&self) -> RateSettings {
        self.settings
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.settings.burst) * REQUEST
    }

    /// The bucket's tokens at `now_ms` (time that went backwards refills nothing).
    fn refilled(&self, bucket: &Bucket, now_ms: i64) -> u64 {
        let elapsed = u64::try_from(now_ms.saturating_sub(bucket.updated_ms)).unwrap_or(0);
        // Thousandths of a request a second are millionths a millisecond.
        let refill = elapsed.saturating_mul(self.settings.milli_per_s);
        bucket.tokens.saturating_add(refill).min(self.capacity())
    }

    /// Spends one request of `key`'s budget at `now_ms`, or says when it may try again.
    pub fn check(&mut self, key: RateKey, now_ms: i64) -> Verdict {
        if !self.settings.enabled() {
            return Verdict::Allow;
        }
        let capacity = self.capacity();
        let tokens = match self.buckets.get(&key) {
            Some(bucket) => self.refilled(bucket, now_ms),
            None => {
                if self.buckets.len() >= MAX_BUCKETS {
                    self.sweep(now_ms);
                }
                capacity
            }
        };
        let (tokens, verdict) = if tokens >= REQUEST {
            (tokens - REQUEST, Verdict::Allow)
        } else {
            let wait_ms = (REQUEST - tokens).div_ceil(self.settings.milli_per_s);
            let retry_after_s = wait_ms.div_ceil(1000).max(1);
            (tokens, Verdict::Limited { retry_after_s })
        };
        let entry = self.buckets.entry(key).or_insert(Bucket {
            tokens,
            updated_ms: now_ms,
        });
        entry.tokens = tokens;
        entry.updated_ms = entry.updated_ms.max(now_ms);
        verdict
    }

    /// Makes room in a full map: buckets back at their burst first, then the idlest.
    fn sweep(&mut self, now_ms: i64) {
        let capacity = self.capacity();
        let rate = self.settings.milli_per_s;
        self.buckets.retain(|_, b| {
            let elapsed = u64::try_from(now_ms.saturating_sub(b.updated_ms)).unwrap_or(0);
            b.tokens.saturating_add(elapsed.saturating_mul(rate)) < capacity
        });
        if self.buckets.len() <= SWEEP_TO {
            return;
        }
        let mut ages: Vec<i64> = self.buckets.values().map(|b| b.updated_ms).collect();
        let excess = self.buckets.len() - SWEEP_TO;
        // The `excess`-th oldest update: everything at or before it goes.
        let (_, cutoff, _) = ages.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let mut to_drop = excess;
        self.buckets.retain(|_, b| {
            if to_drop > 0 && b.updated_ms <= cutoff {
                to_drop -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const OK: Verdict = Verdict::Allow;

    fn key(n: u128) -> RateKey {
        RateKey::ApiKey(Uuid::from_u128(n))
    }

    fn wait(s: u64) -> Verdict {
        Verdict::Limited { retry_after_s: s }
    }

    /// `milli_per_s` thousandths of a request a second, `burst` at once.
    fn rate(milli_per_s: u64, burst: u32) -> RateSettings {
        RateSettings { milli_per_s, burst }
    }

    /// Runs `steps` of (ms after T0, key, expected verdict) against one limiter.
    fn check(settings: RateSettings, steps: &[(i64, RateKey, Verdict)]) -> RateLimiter {
        let mut limiter = RateLimiter::new(settings);
        for (i, (at, key, want)) in steps.iter().enumerate() {
            let got = limiter.check(*key, T0 + at);
            assert_eq!(got, *want, "step {i}: {key:?} at +{at} ms");
        }
        limiter
    }

    #[test]
    fn the_burst_passes_then_requests_are_refused() {
        let a = key(1);
        check(
            rate(1000, 3),
            &[
                (0, a, OK),
                (0, a, OK),
                (0, a, OK),
                (0, a, wait(1)),
                (1, a, wait(1)),
            ],
        );
    }

    #[test]
    fn tokens_refill_over_time_up_to_the_burst() {
        let a = key(1);
        check(
            rate(2000, 2),
            &[
                (0, a, OK),
                (0, a, OK),
                (0, a, wait(1)),
                // 2 a second: one request back every 500 ms.
                (499, a, wait(1)),
                (500, a, OK),
                (500, a, wait(1)),
                // A long pause refills to the burst, not beyond.
                (60_000, a, OK),
                (60_000, a, OK),
                (60_000, a, wait(1)),
            ],
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let a = key(1);
        // One request every 4 s: empty, the wait is 4 s; 1 ms into it, still 4 (3.999 up).
        check(
            rate(250, 1),
            &[
                (0, a, OK),
                (0, a, wait(4)),
                (1, a, wait(4)),
                (1000, a, wait(3)),
                (2999, a, wait(2)),
                (3001, a, wait(1)),
                (3999, a, wait(1)),
                (4000, a, OK),
            ],
        );
        // Three a second: 334 ms from empty is still a whole second.
        check(rate(3000, 1), &[(0, a, OK), (1, a, wait(1)), (334, a, OK)]);
        // Never less than 1 s, even a millisecond before the token is back.
        check(
            rate(1000, 1),
            &[(0, a, OK), (999, a, wait(1)), (1000, a, OK)],
        );
    }

    #[test]
    fn one_credential_does_not_spend_another_s_budget() {
        let (a, b) = (key(1), key(2));
        let s = RateKey::Session(Uuid::from_u128(1));
        let ip = RateKey::address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        check(
            rate(1000, 2),
            &[
                (0, a, OK),
                (0, a, OK),
                (0, a, wait(1)),
                (0, b, OK),
                (0, b, OK),
                (0, b, wait(1)),
                // The same uuid as a session is another budget.
                (0, s, OK),
                (0, s, OK),
                (0, ip, OK),
                (0, a, wait(1)),
                (0, s, wait(1)),
            ],
        );
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let addr = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            RateKey::address(addr("2001:db8:1:2::1")),
            RateKey::address(addr("2001:db8:1:2:ffff::7"))
        );
        assert_ne!(
            RateKey::address(addr("2001:db8:1:2::1")),
            RateKey::address(addr("2001:db8:1:3::1"))
        );
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(
            RateKey::address(IpAddr::V6(v4.to_ipv6_mapped())),
            RateKey::Address(IpAddr::V4(v4))
        );
        assert_eq!(
            RateKey::address(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            RateKey::Address(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn a_rate_of_zero_allows_everything_and_keeps_nothing() {
        let a = key(1);
        let limiter = check(rate(0, 10), &[(0, a, OK), (0, a, OK), (0, a, OK)]);
        assert!(limiter.is_empty());
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let a = key(1);
        check(
            rate(1000, 1),
            &[
                (10_000, a, OK),
                (0, a, wait(1)),
                (10_999, a, wait(1)),
                (11_000, a, OK),
            ],
        );
    }

    #[test]
    fn a_flood_of_distinct_keys_never_grows_the_map() {
        let mut limiter = RateLimiter::new(rate(1000, 2));
        // A limited key that keeps trying.
        let victim = key(u128::MAX);
        assert_eq!(limiter.check(victim, T0), OK);
        assert_eq!(limiter.check(victim, T0), OK);
        assert_eq!(limiter.check(victim, T0), wait(1));
        // Three times the cap in distinct keys, one request each (none back at its burst).
        let mut now = T0;
        for n in 0..(MAX_BUCKETS as u128 * 3) {
            now = T0 + (n as i64) / 1000;
            assert_eq!(limiter.check(key(n), now), OK);
            assert!(limiter.len() <= MAX_BUCKETS, "grew to {}", limiter.len());
            if n % 10_000 == 0 {
                // Recently used, so never the idlest: its bucket, still empty, stays.
                assert_eq!(limiter.check(victim, now), wait(1), "at key {n}");
            }
        }
        assert_eq!(limiter.check(victim, now), wait(1));
    }

    #[test]
    fn a_sweep_drops_buckets_back_at_their_burst_first() {
        // A thousand a second: a spent bucket of 1 is full again after 1 ms.
        let mut limiter = RateLimiter::new(rate(1_000_000, 1));
        for n in 0..MAX_BUCKETS as u128 {
            assert_eq!(limiter.check(key(n), T0), OK);
        }
        assert_eq!(limiter.len(), MAX_BUCKETS);
        assert_eq!(limiter.check(key(u128::MAX), T0 + 1), OK);
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn a_sweep_evicts_the_idlest_when_none_has_refilled() {
        // One request in 1000 s: nothing refills during the test.
        let mut limiter = RateLimiter::new(rate(1, 10));
        for n in 0..MAX_BUCKETS as u128 {
            assert_eq!(limiter.check(key(n), T0 + n as i64), OK);
        }
        assert_eq!(limiter.check(key(u128::MAX), T0 + MAX_BUCKETS as i64), OK);
        assert_eq!(limiter.len(), SWEEP_TO + 1);
        assert!(!limiter.buckets.contains_key(&key(0)), "the idlest stayed");
        let excess = (MAX_BUCKETS - SWEEP_TO) as u128;
        assert!(!limiter.buckets.contains_key(&key(excess - 1)));
        assert!(limiter.buckets.contains_key(&key(excess)));
        assert!(limiter.buckets.contains_key(&key(MAX_BUCKETS as u128 - 1)));
    }
}
