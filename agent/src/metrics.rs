//! Metrics while online and offline: a sampling task that runs for the whole life of the agent
//! and puts each sample in a bounded buffer (one hour of samples; the oldest is dropped and
//! counted when it is full), and a sender per connection that drains the buffer in order, in
//! batches, so a short outage leaves no gap in the charts.
//!
//! A batch taken for sending goes back to the front of the buffer if the send fails or the
//! connection ends first, so nothing taken is lost by a reconnect.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reap3r_wire::{Capped, MAX_BATCH_SAMPLES, Message, MetricsBatch, MetricsSample};
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use crate::inventory::Sampler;
use crate::link::{Link, lock, now_ms};

/// How much history the buffer keeps, in seconds of samples.
pub const BUFFER_SPAN_S: u32 = 3600;

/// Samples waiting to be sent, oldest first, at most an hour's worth at the current interval.
#[derive(Debug)]
pub struct SampleBuffer {
    samples: VecDeque<MetricsSample>,
    capacity: usize,
    dropped: u64,
}

impl SampleBuffer {
    /// A buffer for one hour of samples taken every `interval_s`.
    pub fn for_interval(interval_s: u32) -> Self {
        Self {
            samples: VecDeque::new(),
            capacity: Self::capacity_for(interval_s),
            dropped: 0,
        }
    }

    fn capacity_for(interval_s: u32) -> usize {
        BUFFER_SPAN_S.div_ceil(interval_s.max(1)) as usize
    }

    /// Follows a new interval; a smaller buffer drops its oldest samples.
    pub fn set_interval(&mut self, interval_s: u32) {
        self.capacity = Self::capacity_for(interval_s);
        self.trim();
    }

    fn trim(&mut self) {
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
            self.dropped += 1;
        }
    }

    pub fn push(&mut self, sample: MetricsSample) {
        self.samples.push_back(sample);
        self.trim();
    }

    /// Up to `max` of the oldest samples.
    pub fn take_batch(&mut self, max: usize) -> Vec<MetricsSample> {
        let n = self.samples.len().min(max);
        self.samples.drain(..n).collect()
    }

    /// Puts an unsent batch back in front, in its order (samples taken since stay behind it).
    pub fn requeue_front(&mut self, batch: Vec<MetricsSample>) {
        for sample in batch.into_iter().rev() {
            self.samples.push_front(sample);
        }
        self.trim();
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// One sample alone as `Metrics`, more as a `MetricsBatch`.
pub fn message_for(mut batch: Vec<MetricsSample>) -> Message {
    if batch.len() == 1
        && let Some(one) = batch.pop()
    {
        return Message::Metrics(one);
    }
    Message::MetricsBatch(MetricsBatch {
        samples: Capped::truncated(batch),
    })
}

/// The buffer and the signal that it has something new; shared by the sampler and the senders.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    buffer: Arc<Mutex<SampleBuffer>>,
    ready: Arc<Notify>,
}

impl Outbox {
    pub(crate) fn new(interval_s: u32) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(SampleBuffer::for_interval(interval_s))),
            ready: Arc::new(Notify::new()),
        }
    }
}

/// Samples every `interval` seconds (it follows config changes) until the agent stops.
pub(crate) async fn sample_forever(outbox: Outbox, mut interval: watch::Receiver<u32>) {
    let mut sampler = Sampler::new();
    loop {
        let secs = *interval.borrow_and_update();
        lock(&outbox.buffer).set_interval(secs);
        let period = Duration::from_secs(u64::from(secs.max(1)));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let sample = sampler.metrics(now_ms());
                    lock(&outbox.buffer).push(sample);
                    outbox.ready.notify_one();
                }
                changed = interval.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Puts a taken batch back unless it was sent (also when the sender task is aborted).
struct Taken<'a> {
    outbox: &'a Outbox,
    batch: Option<Vec<MetricsSample>>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            lock(&self.outbox.buffer).requeue_front(batch);
        }
    }
}

/// Sends what the buffer holds on `link`, oldest first, a batch per uni stream, until the
/// connection fails (the batch in flight goes back to the buffer).
pub(crate) async fn send_buffered(link: Link, outbox: Outbox) {
    // Whatever was buffered before this connection goes out at once.
    outbox.ready.notify_one();
    loop {
        outbox.ready.notified().await;
        loop {
            let batch = lock(&outbox.buffer).take_batch(MAX_BATCH_SAMPLES);
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            let mut taken = Taken {
                outbox: &outbox,
                batch: Some(batch),
            };
            let message = message_for(taken.batch.clone().unwrap_or_default());
            match link.send_uni(message).await {
                Ok(()) => {
                    taken.batch = None;
                    debug!(samples = n, "metrics sent");
                }
                Err(err) => {
                    warn!(%err, samples = n, "metrics not sent; kept for the next connection");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64) -> MetricsSample {
        MetricsSample {
            taken_at_ms: at,
            cpu_centipercent: 0,
            load1_centi: 0,
            load5_centi: 0,
            load15_centi: 0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            swap_used_bytes: 0,
            swap_total_bytes: 0,
            mounts: Capped::default(),
            interfaces: Capped::default(),
            process_count: 0,
            uptime_s: 0,
        }
    }

    fn times(v: &[MetricsSample]) -> Vec<u64> {
        v.iter().map(|s| s.taken_at_ms).collect()
    }

    #[test]
    fn holds_one_hour_and_drops_the_oldest_counted() {
        let mut b = SampleBuffer::for_interval(60);
        assert_eq!(b.capacity(), 60);
        assert_eq!(SampleBuffer::for_interval(5).capacity(), 720);
        assert_eq!(SampleBuffer::for_interval(7).capacity(), 515);
        for t in 0..65 {
            b.push(sample(t));
        }
        assert_eq!((b.len(), b.dropped()), (60, 5));
        assert_eq!(times(&b.take_batch(2)), vec![5, 6]);
        // A shorter buffer (longer interval) keeps the newest.
        b.set_interval(600);
        assert_eq!((b.len(), b.dropped()), (6, 57));
        assert_eq!(times(&b.take_batch(100)), vec![59, 60, 61, 62, 63, 64]);
    }

    #[test]
    fn an_unsent_batch_goes_back_in_order_ahead_of_newer_samples() {
        let mut b = SampleBuffer::for_interval(5);
        for t in 0..5 {
            b.push(sample(t));
        }
        let batch = b.take_batch(3);
        b.push(sample(5));
        b.requeue_front(batch);
        assert_eq!(times(&b.take_batch(10)), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn replay_after_a_reconnect_sends_everything_once_in_batches() {
        // Offline for 100 samples, then the connection comes back: the sender drains them in
        // order, at most a batch per message, the first send failing once (lost connection).
        let outbox = Outbox::new(5);
        for t in 0..100 {
            lock(&outbox.buffer).push(sample(t));
        }
        let mut sent: Vec<u64> = Vec::new();
        let mut fail_once = true;
        loop {
            let batch = lock(&outbox.buffer).take_batch(MAX_BATCH_SAMPLES);
            if batch.is_empty() {
                break;
            }
            let mut taken = Taken {
                outbox: &outbox,
                batch: Some(batch),
            };
            let message = message_for(taken.batch.clone().unwrap());
            if fail_once {
                fail_once = false;
                drop(taken);
                continue;
            }
            match message {
                Message::MetricsBatch(b) => {
                    assert!(b.samples.len() <= MAX_BATCH_SAMPLES);
                    sent.extend(b.samples.iter().map(|s| s.taken_at_ms));
                }
                Message::Metrics(s) => sent.push(s.taken_at_ms),
                other => panic!("unexpected {other:?}"),
            }
            taken.batch = None;
        }
        assert_eq!(sent, (0..100).collect::<Vec<_>>());
        assert!(matches!(message_for(vec![sample(1)]), Message::Metrics(_)));
    }
}
