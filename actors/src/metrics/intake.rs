//! The bounded hand-off between sessions and the metrics writer. Sessions `offer` verified
//! samples; the writer `take`s up to a flush's worth, and `requeue`s it when the flush failed.
//! Nothing here can grow without bound: past the capacity samples are dropped and counted, and
//! at most one "flush now" nudge is in the writer's mailbox at a time (ractor mailboxes are
//! unbounded, so the network must not fill it).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::catalog::AgentSample;
use super::ingest::{DEFAULT_FLUSH_MAX, DEFAULT_INTAKE_CAPACITY};
use super::writer::MetricsMsg;
use crate::slot::ActorSlot;

#[derive(Debug)]
struct Inner {
    queue: Mutex<VecDeque<AgentSample>>,
    capacity: usize,
    /// A queue this long asks the writer to flush before its timer.
    flush_at: usize,
    nudged: AtomicBool,
    dropped: AtomicU64,
    refused: AtomicU64,
    writer: ActorSlot<MetricsMsg>,
}

/// Shared by every session and the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct MetricsIntake(Arc<Inner>);

impl Default for MetricsIntake {
    fn default() -> Self {
        Self::new(DEFAULT_INTAKE_CAPACITY, DEFAULT_FLUSH_MAX)
    }
}

impl MetricsIntake {
    pub fn new(capacity: usize, flush_at: usize) -> Self {
        Self(Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            flush_at: flush_at.max(1),
            nudged: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            writer: ActorSlot::default(),
        }))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<AgentSample>> {
        // A poisoned lock only means a holder panicked between two plain pushes; the queue
        // itself is still a valid queue.
        self.0.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues samples in order; those beyond the capacity are dropped (newest ones: the queue
    /// keeps what arrived first, so a flush order stays the arrival order). Returns how many
    /// were queued.
    pub fn offer(&self, samples: impl IntoIterator<Item = AgentSample>) -> usize {
        let (queued, len) = {
            let mut q = self.queue();
            let mut queued = 0;
            for s in samples {
                if q.len() >= self.0.capacity {
                    self.0.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                q.push_back(s);
                queued += 1;
            }
            (queued, q.len())
        };
        if len >= self.0.flush_at && !self.0.nudged.swap(true, Ordering::AcqRel) {
            match self.0.writer.get() {
                Some(w) => {
                    if w.cast(MetricsMsg::Flush).is_err() {
                        self.0.nudged.store(false, Ordering::Release);
                    }
                }
                None => self.0.nudged.store(false, Ordering::Release),
            }
        }
        queued
    }

    /// Takes up to `max` samples, oldest first, and re-arms the nudge.
    pub fn take(&self, max: usize) -> Vec<AgentSample> {
        self.0.nudged.store(false, Ordering::Release);
        let mut q = self.queue();
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Puts back a batch whose flush failed, ahead of what arrived since, so the next flush
    /// retries it in arrival order. The queue still holds at most its capacity: what does not
    /// fit is dropped from the newest end (as [`Self::offer`] does) and the count returned.
    /// The nudge stays disarmed until the next `take`, so while the database is down the writer
    /// retries on its timer instead of on every offer.
    pub fn requeue(&self, batch: Vec<AgentSample>) -> usize {
        self.0.nudged.store(true, Ordering::Release);
        let mut q = self.queue();
        for s in batch.into_iter().rev() {
            q.push_front(s);
        }
        let over = q.len().saturating_sub(self.0.capacity);
        q.truncate(self.0.capacity);
        over
    }

    pub fn len(&self) -> usize {
        self.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Counts a sample refused at admission (far future, older than raw retention).
    pub fn count_refused(&self) {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Where the writer is found for nudges (set by the root supervisor when it starts one).
    pub fn writer_slot(&self) -> &ActorSlot<MetricsMsg> {
        &self.0.writer
    }
}

#[cfg(test)]
mod tests {
    use reap3r_store::Uuid;

    use super::*;

    fn sample(i: i64) -> AgentSample {
        AgentSample {
            agent_id: Uuid::nil(),
            org_id: Uuid::nil(),
            taken_at_ms: i,
            values: Vec::new(),
        }
    }

    fn times(v: &[AgentSample]) -> Vec<i64> {
        v.iter().map(|s| s.taken_at_ms).collect()
    }

    #[test]
    fn bounded_with_a_drop_counter_and_batches_in_arrival_order() {
        let intake = MetricsIntake::new(5, 3);
        assert_eq!(intake.offer((0..4).map(sample)), 4);
        assert_eq!(intake.offer((4..8).map(sample)), 1);
        assert_eq!((intake.len(), intake.dropped()), (5, 3));
        assert_eq!(times(&intake.take(2)), vec![0, 1]);
        assert_eq!(times(&intake.take(10)), vec![2, 3, 4]);
        assert!(intake.take(10).is_empty());
        // Room again after a take.
        assert_eq!(intake.offer([sample(9)]), 1);
        assert_eq!(intake.dropped(), 3);
    }

    #[test]
    fn a_requeued_batch_goes_first_and_the_queue_stays_within_its_capacity() {
        let intake = MetricsIntake::new(5, 100);
        intake.offer((0..4).map(sample));
        let batch = intake.take(3);
        // Arrived while the flush was failing.
        intake.offer((4..7).map(sample));
        assert_eq!(intake.len(), 4);
        // 3 back + 4 queued = 7: the 2 newest do not fit.
        assert_eq!(intake.requeue(batch), 2);
        assert_eq!(times(&intake.take(10)), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            intake.dropped(),
            0,
            "requeue losses are the writer's to count"
        );
    }
}
