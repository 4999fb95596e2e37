//! A UDP impairment relay: loss, delay, jitter, reordering and duplication, per direction.
//!
//! One relay sits in front of each client endpoint: the endpoint's agents dial the relay's
//! listening socket, and the relay forwards to the server from its own upstream socket (and back
//! to the one client address it learnt). Every packet is dropped with probability `loss`,
//! otherwise delivered after `delay ± jitter` (uniform); with probability `reorder` it is held
//! back one extra `delay` (so later packets overtake it), and with probability `duplicate` a
//! second copy follows with its own delay. Both directions are impaired independently, so the
//! round trip is `2 × delay` and a round trip survives with probability `(1 − loss)²`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::Rng;
use crate::transport::udp_socket;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Impairment {
    /// Probability that a packet is dropped, per direction.
    pub loss: f64,
    /// One-way delay (half the added round-trip time).
    pub delay: Duration,
    /// Uniform jitter added to or taken from the delay.
    pub jitter: Duration,
    pub reorder: f64,
    pub duplicate: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct RelayStats {
    pub packets: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
}

impl RelayStats {
    pub fn add(&self, other: &RelayStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.packets
            .fetch_add(get(&other.packets), Ordering::Relaxed);
        self.dropped
            .fetch_add(get(&other.dropped), Ordering::Relaxed);
        self.duplicated
            .fetch_add(get(&other.duplicated), Ordering::Relaxed);
        self.reordered
            .fetch_add(get(&other.reordered), Ordering::Relaxed);
    }
}

pub struct Relay {
    pub listen: SocketAddr,
    pub stats: Arc<RelayStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Where a direction sends what it relays.
#[derive(Clone)]
enum Sink {
    /// Upstream socket connected to the server.
    Connected(Arc<UdpSocket>),
    /// The listening socket, back to the client address learnt from its first packet.
    Client(Arc<UdpSocket>, Arc<Mutex<Option<SocketAddr>>>),
}

impl Sink {
    async fn send(&self, bytes: &[u8]) {
        match self {
            Sink::Connected(s) => {
                let _ = s.send(bytes).await;
            }
            Sink::Client(s, addr) => {
                let to = *addr.lock().await;
                if let Some(to) = to {
                    let _ = s.send_to(bytes, to).await;
                }
            }
        }
    }
}

impl Relay {
    pub async fn start(server: SocketAddr, imp: Impairment) -> Result<Self> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let listen = Arc::new(UdpSocket::from_std(udp_socket(loopback)?)?);
        let upstream = Arc::new(UdpSocket::from_std(udp_socket(loopback)?)?);
        upstream.connect(server).await?;
        let client = Arc::new(Mutex::new(None));
        let stats = Arc::new(RelayStats::default());
        let up = tokio::spawn(direction(
            listen.clone(),
            Some(client.clone()),
            Sink::Connected(upstream.clone()),
            imp,
            stats.clone(),
        ));
        let down = tokio::spawn(direction(
            upstream,
            None,
            Sink::Client(listen.clone(), client),
            imp,
            stats.clone(),
        ));
        Ok(Self {
            listen: listen.local_addr()?,
            stats,
            tasks: vec![up, down],
        })
    }
}

struct Scheduled {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Receives on `from`, impairs, and delivers to `to` when each packet is due.
async fn direction(
    from: Arc<UdpSocket>,
    learn: Option<Arc<Mutex<Option<SocketAddr>>>>,
    to: Sink,
    imp: Impairment,
    stats: Arc<RelayStats>,
) {
    let mut rng = Rng::new();
    let mut queue: BinaryHeap<Reverse<Scheduled>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = queue.peek().map(|Reverse(s)| s.at);
        tokio::select! {
            received = from.recv_from(&mut buf) => {
                let Ok((len, src)) = received else { continue };
                if let Some(learn) = &learn {
                    let mut addr = learn.lock().await;
                    if *addr != Some(src) {
                        *addr = Some(src);
                    }
                }
                stats.packets.fetch_add(1, Ordering::Relaxed);
                if rng.chance(imp.loss) {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let copies = if rng.chance(imp.duplicate) {
                    stats.duplicated.fetch_add(1, Ordering::Relaxed);
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let mut delay = imp.delay;
                    if !imp.jitter.is_zero() {
                        let j = rng.duration_up_to(imp.jitter * 2);
                        delay = (delay + j).saturating_sub(imp.jitter);
                    }
                    if rng.chance(imp.reorder) {
                        stats.reordered.fetch_add(1, Ordering::Relaxed);
                        delay += imp.delay.max(Duration::from_millis(1));
                    }
                    seq += 1;
                    queue.push(Reverse(Scheduled { at: Instant::now() + delay, seq, bytes: buf[..len].to_vec() }));
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while queue.peek().is_some_and(|Reverse(s)| s.at <= now) {
                    if let Some(Reverse(s)) = queue.pop() {
                        to.send(&s.bytes).await;
                    }
                }
            }
        }
    }
}
