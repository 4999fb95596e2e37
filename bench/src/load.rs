//! Steady-state load: a pacer that sends at a fixed total rate, an observer that samples the
//! receiver's counters, and the ingest latency derived from the two.
//!
//! Ingest latency is measured per cohort: after each pacer tick the pacer records how many
//! messages it has sent so far (`s` at time `t`); the observer samples the receiver's counter
//! (`c` at time `u`, taken when the sample's answer arrives). A cohort's latency is the first
//! `u ≥ t` with `c ≥ s × f`, minus `t`, where `f` is the fraction of messages that arrived at all
//! (so lost datagrams do not count as infinitely late). It is an upper bound on when the last
//! message of the cohort was counted, with the observer's sampling period as resolution.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::Api;

/// What the pacer's callback did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A heartbeat (the measured kind) went out.
    Heartbeat,
    /// Another message (metrics) went out.
    Other,
    Failed,
    /// Nothing was left to send for that sender.
    Nothing,
}

#[derive(Debug, Default, Clone)]
pub struct Paced {
    /// (ms since start, heartbeats sent so far) after each tick.
    pub samples: Vec<(f64, u64)>,
    pub heartbeats: u64,
    pub other: u64,
    pub failed: u64,
    pub nothing: u64,
    pub elapsed_s: f64,
}

/// Calls `send(i)` for i in 0..total, at `rate` calls per second overall, in ticks.
pub async fn pace(
    start: Instant,
    total: u64,
    rate: f64,
    tick: Duration,
    mut send: impl AsyncFnMut(u64) -> Sent,
) -> Paced {
    let mut out = Paced::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut i = 0u64;
    while i < total {
        interval.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while i < due {
            match send(i).await {
                Sent::Heartbeat => out.heartbeats += 1,
                Sent::Other => out.other += 1,
                Sent::Failed => out.failed += 1,
                Sent::Nothing => out.nothing += 1,
            }
            i += 1;
        }
        out.samples
            .push((start.elapsed().as_secs_f64() * 1000.0, out.heartbeats));
    }
    out.elapsed_s = start.elapsed().as_secs_f64();
    out
}

/// (ms since start, heartbeats counted, all messages counted).
pub type Observation = (f64, u64, u64);

/// Samples a receiver's counters every `period` until told to stop.
pub struct Observer {
    pub series: Arc<Mutex<Vec<Observation>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Samples the server's `/metrics`: heartbeats and verified agent messages, relative to
    /// their values at the start.
    pub fn server(api: Api, start: Instant, period: Duration, base: (u64, u64)) -> Self {
        Self::spawn(start, period, move || {
            let api = api.clone();
            async move {
                let m = api.metrics().await.ok()?;
                let hb = *m.get("reap3r_agent_heartbeats_total")? as u64;
                let msgs = *m.get("reap3r_agent_messages_in_total")? as u64;
                Some((hb.saturating_sub(base.0), msgs.saturating_sub(base.1)))
            }
        })
    }

    /// Samples an in-process counter (the nats subscriber's).
    pub fn counter(counter: Arc<AtomicU64>, start: Instant, period: Duration) -> Self {
        Self::spawn(start, period, move || {
            let c = counter.clone();
            async move {
                let v = c.load(Ordering::Relaxed);
                Some((v, v))
            }
        })
    }

    fn spawn<F, Fut>(start: Instant, period: Duration, mut sample: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<(u64, u64)>> + Send,
    {
        let series = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (series.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !st.load(Ordering::Relaxed) {
                interval.tick().await;
                if let Some((hb, msgs)) = sample().await {
                    let at = start.elapsed().as_secs_f64() * 1000.0;
                    s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((at, hb, msgs));
                }
            }
        });
        Self { series, stop, task }
    }

    pub fn last(&self) -> Option<Observation> {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .copied()
    }

    /// Keeps sampling until the heartbeat count reaches `expected`, stops growing for `quiet`,
    /// or `max` passes; then stops and returns the series.
    pub async fn drain(self, expected: u64, quiet: Duration, max: Duration) -> Vec<Observation> {
        let begin = Instant::now();
        let mut last = (self.last().map(|o| o.1), Instant::now());
        while begin.elapsed() < max {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.last().map(|o| o.1);
            if now.is_some_and(|v| v >= expected) {
                break;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= quiet {
                break;
            }
        }
        // One more sample after the condition, so the series ends on a fresh value.
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(6), self.task).await;
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Latency of each sent cohort (ms); see the module docs.
pub fn cohort_latencies(sent: &[(f64, u64)], seen: &[Observation], fraction: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(sent.len());
    for &(t, s) in sent {
        if s == 0 {
            continue;
        }
        let need = ((s as f64) * fraction.clamp(0.0, 1.0)).floor() as u64;
        // The counter never decreases, so the first sample reaching `need` is found by search.
        let idx = seen.partition_point(|o| o.1 < need);
        let Some(o) = seen[idx..].iter().find(|o| o.0 >= t) else {
            continue;
        };
        out.push(o.0 - t);
    }
    out
}

/// Value of a series at (or just before) time `t` ms.
pub fn value_at(seen: &[Observation], t: f64) -> Option<Observation> {
    let idx = seen.partition_point(|o| o.0 <= t);
    idx.checked_sub(1).map(|i| seen[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohorts_wait_for_their_count() {
        let sent = vec![(10.0, 100), (20.0, 200), (30.0, 300)];
        let seen = vec![(12.0, 50, 50), (25.0, 150, 150), (40.0, 300, 300)];
        assert_eq!(cohort_latencies(&sent, &seen, 1.0), vec![15.0, 20.0, 10.0]);
        // Half of everything arrived: a cohort waits only for its share.
        assert_eq!(cohort_latencies(&sent, &seen, 0.5), vec![2.0, 5.0, 10.0]);
        assert_eq!(value_at(&seen, 30.0), Some((25.0, 150, 150)));
        assert_eq!(value_at(&seen, 1.0), None);
    }

    #[tokio::test]
    async fn pacer_sends_everything_at_the_rate() {
        let start = Instant::now();
        let mut n = 0u64;
        let paced = pace(start, 200, 2000.0, Duration::from_millis(2), async |i| {
            n += 1;
            if i % 2 == 0 {
                Sent::Heartbeat
            } else {
                Sent::Other
            }
        })
        .await;
        assert_eq!(n, 200);
        assert_eq!((paced.heartbeats, paced.other), (100, 100));
        assert!(paced.elapsed_s >= 0.09, "{}", paced.elapsed_s);
    }
}
