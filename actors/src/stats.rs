//! Counters for what the fleet layer sees; exported as metrics and asserted by tests.

use std::sync::atomic::{AtomicU64, Ordering};

use reap3r_wire::CloseCode;

/// Process-wide counters; cheap to bump from any task.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub connections_accepted: AtomicU64,
    pub sessions_online: AtomicU64,
    pub enrolments: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub heartbeats: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub session_crashes: AtomicU64,
    pub presence_flushes: AtomicU64,
    pub jobs_created: AtomicU64,
    pub job_dispatches: AtomicU64,
    /// Results committed for the first time (each target at most once).
    pub job_results_stored: AtomicU64,
    /// Results received for targets already finished (replays, late results); acked, not stored.
    pub job_results_duplicate: AtomicU64,
    pub job_actor_crashes: AtomicU64,
    /// Dispatches an agent refused (bad grant signature, wrong agent, expired, ...).
    pub job_refusals: AtomicU64,
    /// Dispatches an agent answered with `Duplicate` (it already had the job).
    pub job_duplicate_acks: AtomicU64,
    /// Signature batches the verifier workers ran, and the signatures in them.
    pub signature_batches: AtomicU64,
    pub signatures_verified: AtomicU64,
    /// Connections refused before the TLS handshake: they waited too long for admission, or
    /// the admission queue was full.
    pub handshakes_shed: AtomicU64,
    /// Long-lived subsystems (presence writer, session or job supervisor) the root supervisor
    /// restarted after a crash.
    pub subsystem_restarts: AtomicU64,
    /// Metrics writer flushes (one multi-row insert each) and the samples they stored.
    pub metrics_flushes: AtomicU64,
    pub metrics_stored: AtomicU64,
    /// Samples dropped because the writer's intake was full, and samples refused at admission
    /// (far-future time, older than raw retention).
    pub metrics_dropped: AtomicU64,
    pub metrics_refused: AtomicU64,
    /// Flushes whose transaction failed (their samples are retried), and samples lost anyway:
    /// past the intake's capacity when put back, or refused by the database for good.
    pub metrics_flush_failures: AtomicU64,
    pub metrics_lost: AtomicU64,
    /// Finished rollup buckets late samples were merged into; rollup rows written; rows expired.
    pub metrics_late_buckets: AtomicU64,
    pub metrics_rollup_rows: AtomicU64,
    pub metrics_expired_rows: AtomicU64,
    closes: [AtomicU64; CloseCode::ALL.len()],
}

impl FleetStats {
    pub fn count_close(&self, code: CloseCode) {
        self.closes[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn closes(&self, code: CloseCode) -> u64 {
        self.closes[code as usize].load(Ordering::Relaxed)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&self.connections_accepted),
            sessions_online: get(&self.sessions_online),
            enrolments: get(&self.enrolments),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            heartbeats: get(&self.heartbeats),
            datagrams_dropped: get(&self.datagrams_dropped),
            session_crashes: get(&self.session_crashes),
            presence_flushes: get(&self.presence_flushes),
            closes: CloseCode::ALL
                .iter()
                .map(|c| (c.as_str(), self.closes(*c)))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsSnapshot {
    pub connections_accepted: u64,
    pub sessions_online: u64,
    pub enrolments: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub heartbeats: u64,
    pub datagrams_dropped: u64,
    pub session_crashes: u64,
    pub presence_flushes: u64,
    pub closes: Vec<(&'static str, u64)>,
}
