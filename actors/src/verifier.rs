//! Batches Ed25519 checks across sessions: envelopes from many agents are verified together on
//! dedicated threads, so a busy node pays the batched cost per signature, not the single one.
//!
//! A session hands over an envelope and its agent's key and awaits the verdict; it stays
//! responsible for everything stateful (session nonce, sender, replay window). Batches are never
//! padded by waiting: a worker takes whatever is queued (up to [`MAX_BATCH`]) the moment it is
//! free, so an idle node verifies one at a time with no added latency and a loaded one verifies
//! in large batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reap3r_wire::{Envelope, Unverified, Verified, VerifyingKey, WireError};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::FleetStats;

/// Largest batch one worker verifies at once (about 4 ms of work at this size).
pub const MAX_BATCH: usize = 256;
/// Envelopes queued per worker before callers wait (backpressure into QUIC flow control).
const QUEUE_PER_WORKER: usize = 4096;

type Verdict = Result<Envelope<Verified>, WireError>;

struct Request {
    env: Envelope<Unverified>,
    key: VerifyingKey,
    reply: oneshot::Sender<Verdict>,
}

/// Why a verification produced no verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("signature verifier is not running")]
    Stopped,
}

/// Handle to the verifier workers; cheap to clone. Workers stop when every handle is dropped.
#[derive(Clone)]
pub struct SignatureVerifier {
    queues: Arc<[mpsc::Sender<Request>]>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("workers", &self.queues.len())
            .finish()
    }
}

impl SignatureVerifier {
    /// Starts `workers` verifier threads (at least one).
    pub fn start(workers: usize, stats: Arc<FleetStats>) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = mpsc::channel(QUEUE_PER_WORKER);
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("reap3r-verify-{i}"))
                .spawn(move || run_worker(rx, &stats))?;
            queues.push(tx);
        }
        Ok(Self {
            queues: queues.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Workers for this machine: half the cores, since QUIC and the sessions need the rest.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    /// Checks `env`'s signature against `key` and decodes its body.
    pub async fn verify(
        &self,
        env: Envelope<Unverified>,
        key: VerifyingKey,
    ) -> Result<Envelope<Verified>, VerifyError> {
        let (reply, verdict) = oneshot::channel();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        let queue = self.queues.get(i).ok_or(VerifyError::Stopped)?;
        queue
            .send(Request { env, key, reply })
            .await
            .map_err(|_| VerifyError::Stopped)?;
        Ok(verdict.await.map_err(|_| VerifyError::Stopped)??)
    }
}

fn run_worker(mut rx: mpsc::Receiver<Request>, stats: &FleetStats) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        stats.signature_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .signatures_verified
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (items, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|r| ((r.env, r.key), r.reply)).unzip();
        // Decoding runs here on untrusted bytes. It is fuzzed and must not panic, but if it ever
        // did, this batch's callers get `Stopped` (their sessions close) and the worker lives on.
        let verdicts = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Envelope::verify_batch(items)
        }));
        let Ok(verdicts) = verdicts else {
            warn!("signature verification panicked; its batch is refused");
            continue;
        };
        // `verify_batch` answers every envelope, in order.
        for (reply, verdict) in replies.into_iter().zip(verdicts) {
            // The session may have gone meanwhile; its verdict is not needed then.
            let _ = reply.send(verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reap3r_wire::{Heartbeat, Message, OutboundSession, SigningKey};

    fn sealed(seq_key: u8, n: usize) -> (VerifyingKey, Vec<Vec<u8>>) {
        let key = SigningKey::from_bytes(&[seq_key; 32]);
        let mut out = OutboundSession::new([seq_key; 16], [7; 16], key.clone());
        let frames = (0..n)
            .map(|i| {
                let beat = Heartbeat {
                    uptime_s: i as u64,
                    cpu_centipercent: 0,
                    memory_used_bytes: 0,
                };
                out.seal(Message::Heartbeat(beat), 1000)
            })
            .collect();
        (key.verifying_key(), frames)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verdicts_match_single_checks_under_concurrency() {
        let stats = Arc::new(FleetStats::default());
        let verifier = SignatureVerifier::start(1, stats.clone()).unwrap();
        let mut tasks = Vec::new();
        for agent in 1..=20u8 {
            let (key, frames) = sealed(agent, 30);
            let verifier = verifier.clone();
            tasks.push(tokio::spawn(async move {
                let mut results = Vec::new();
                for (i, mut bytes) in frames.into_iter().enumerate() {
                    // Every seventh envelope of every third agent is forged.
                    let forged = agent % 3 == 0 && i % 7 == 0;
                    if forged {
                        let last = bytes.len() - 1;
                        bytes[last] ^= 1;
                    }
                    let env = Envelope::parse(bytes).unwrap();
                    results.push((forged, verifier.verify(env, key).await));
                }
                results
            }));
        }
        let mut checked = 0;
        for task in tasks {
            for (forged, verdict) in task.await.unwrap() {
                match verdict {
                    Ok(env) => {
                        assert!(!forged, "a forged envelope was accepted");
                        assert!(matches!(env.message(), Message::Heartbeat(_)));
                    }
                    Err(VerifyError::Wire(WireError::BadSignature)) => {
                        assert!(forged, "a genuine envelope was refused")
                    }
                    Err(other) => panic!("unexpected verdict {other}"),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 600);
        assert_eq!(stats.signatures_verified.load(Ordering::Relaxed), 600);
    }

    #[tokio::test]
    async fn a_key_that_did_not_sign_is_refused() {
        let verifier = SignatureVerifier::start(1, Arc::default()).unwrap();
        let (_, frames) = sealed(1, 1);
        let (other_key, _) = sealed(2, 0);
        let env = Envelope::parse(frames[0].clone()).unwrap();
        let verdict = verifier.verify(env, other_key).await;
        assert!(matches!(
            verdict,
            Err(VerifyError::Wire(WireError::BadSignature))
        ));
    }
}
