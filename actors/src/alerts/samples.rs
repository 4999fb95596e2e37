//! [`AlertSamples`], alerting's [`SampleSink`]: the metrics writer hands it each committed
//! flush; it queues the batch (bounded: past [`MAX_QUEUED_BATCHES`] the oldest is dropped and
//! counted) and wakes the alert supervisor once, however many batches arrive before the
//! supervisor drains the queue. So the network never fills an actor mailbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::metrics::{AgentSample, SampleSink};
use crate::slot::ActorSlot;

use super::supervisor::AlertSupervisorMsg;

/// Most batches waiting for the supervisor (a flush is one batch).
pub const MAX_QUEUED_BATCHES: usize = 1024;

#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<Arc<[AgentSample]>>,
    dropped: u64,
    woken: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AlertSamples {
    queue: Arc<Mutex<Queue>>,
    supervisor: ActorSlot<AlertSupervisorMsg>,
}

impl AlertSamples {
    /// Where the supervisor is found (set by it when it starts).
    pub(crate) fn slot(&self) -> &ActorSlot<AlertSupervisorMsg> {
        &self.supervisor
    }

    /// The running alert supervisor, if any.
    pub fn supervisor(&self) -> Option<ractor::ActorRef<AlertSupervisorMsg>> {
        self.supervisor.get()
    }

    /// Takes every queued batch; the next batch wakes the supervisor again.
    pub(crate) fn take(&self) -> Vec<Arc<[AgentSample]>> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.woken = false;
        q.batches.drain(..).collect()
    }

    /// Batches dropped because the supervisor fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }
}

impl SampleSink for AlertSamples {
    fn samples_committed(&self, batch: Arc<[AgentSample]>) {
        let wake = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.batches.len() >= MAX_QUEUED_BATCHES {
                q.batches.pop_front();
                q.dropped += 1;
            }
            q.batches.push_back(batch);
            !std::mem::replace(&mut q.woken, true)
        };
        if wake && !self.supervisor.cast(AlertSupervisorMsg::Samples) {
            // No supervisor yet (or it is restarting): the next batch tries again.
            self.queue.lock().unwrap_or_else(|e| e.into_inner()).woken = false;
        }
    }
}
