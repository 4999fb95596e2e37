//! The peer: the same fan-out and heartbeat workloads against a nats-server with async-nats.
//!
//! - Fan-out: N subscriber connections on one subject; one requester publishes a request of the
//!   size of our job dispatch with a reply inbox, and each subscriber answers with a reply of the
//!   size of our job result. Latency per reply: publish → reply received by the requester.
//! - Heartbeats: N publisher connections send messages of a signed heartbeat's size (the same
//!   bytes, nobody verifies them) at the same total rate for the same time; one subscriber
//!   counts them, sampled like our server's counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;

use crate::load::{self, Observation, Paced, Sent};
use crate::stats::Summary;

pub async fn connect(url: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// Whether a nats-server answers at `url` (connect and flush).
pub async fn probe(url: &str) -> Result<()> {
    let client = tokio::time::timeout(Duration::from_secs(5), connect(url))
        .await
        .map_err(|_| anyhow!("timed out"))??;
    client.flush().await.map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

async fn connect_many(url: &str, n: usize) -> Result<Vec<async_nats::Client>> {
    let clients: Vec<Result<async_nats::Client>> = futures::stream::iter(0..n)
        .map(|_| connect(url))
        .buffer_unordered(64)
        .collect()
        .await;
    clients.into_iter().collect()
}

#[derive(Debug, Clone)]
pub struct FanoutPeer {
    pub replies: usize,
    pub all_ms: f64,
    pub latency: Summary,
}

fn subject(kind: &str) -> String {
    format!("reap3r.bench.{kind}.{}", uuid::Uuid::new_v4().simple())
}

pub async fn fanout(
    url: &str,
    n: usize,
    request_len: usize,
    reply_len: usize,
    timeout: Duration,
) -> Result<FanoutPeer> {
    let subject = subject("fanout");
    let clients = connect_many(url, n)
        .await
        .context("connecting subscribers")?;
    let mut responders = Vec::with_capacity(n);
    for client in &clients {
        let mut sub = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let client = client.clone();
        let reply = bytes_of(reply_len);
        responders.push(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(to) = msg.reply {
                    let _ = client.publish(to, reply.clone()).await;
                }
            }
        }));
    }
    // Every SUB has reached the server once each connection's PING is answered.
    for client in &clients {
        client.flush().await.map_err(|e| anyhow!("{e}"))?;
    }
    let requester = connect(url).await?;
    let inbox = requester.new_inbox();
    let mut replies = requester
        .subscribe(inbox.clone())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    requester.flush().await.map_err(|e| anyhow!("{e}"))?;
    let start = Instant::now();
    requester
        .publish_with_reply(subject, inbox, bytes_of(request_len))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    requester.flush().await.map_err(|e| anyhow!("{e}"))?;
    let mut latencies = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + timeout;
    while latencies.len() < n {
        match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(_)) => latencies.push(start.elapsed().as_secs_f64() * 1000.0),
            Ok(None) | Err(_) => break,
        }
    }
    let all_ms = start.elapsed().as_secs_f64() * 1000.0;
    for r in responders {
        r.abort();
    }
    Ok(FanoutPeer {
        replies: latencies.len(),
        all_ms,
        latency: Summary::of(latencies),
    })
}

fn bytes_of(len: usize) -> bytes::Bytes {
    vec![0x5a; len].into()
}

#[derive(Debug, Clone)]
pub struct SteadyPeer {
    pub paced: Paced,
    pub series: Vec<Observation>,
    pub received: u64,
    /// Per message: publish → delivered to the subscriber (send time carried in the payload).
    pub per_message: Summary,
}

pub async fn heartbeats(
    url: &str,
    n: usize,
    payload: Vec<u8>,
    rate: f64,
    duration: Duration,
    sample: Duration,
) -> Result<SteadyPeer> {
    let subject = subject("heartbeat");
    let publishers = connect_many(url, n)
        .await
        .context("connecting publishers")?;
    let receiver = connect(url).await?;
    let mut sub = receiver
        .subscribe(subject.clone())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    receiver.flush().await.map_err(|e| anyhow!("{e}"))?;
    let count = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    let (c, l) = (count.clone(), latencies.clone());
    let counter = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            c.fetch_add(1, Ordering::Relaxed);
            if let Some(sent) = msg.payload.first_chunk::<8>() {
                let sent_us = u64::from_le_bytes(*sent);
                let now_us = start.elapsed().as_micros() as u64;
                let ms = now_us.saturating_sub(sent_us) as f64 / 1000.0;
                l.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
            }
        }
    });
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let observer = load::Observer::counter(count.clone(), start, sample);
    let subject_ref = &subject;
    let payload = &payload;
    let paced = load::pace(start, total, rate, Duration::from_millis(2), async |i| {
        let client = &publishers[(i % n as u64) as usize];
        let mut bytes = payload.clone();
        let now = (start.elapsed().as_micros() as u64).to_le_bytes();
        let k = bytes.len().min(8);
        bytes[..k].copy_from_slice(&now[..k]);
        match client.publish(subject_ref.clone(), bytes.into()).await {
            Ok(()) => Sent::Heartbeat,
            Err(_) => Sent::Failed,
        }
    })
    .await;
    for p in &publishers {
        let _ = p.flush().await;
    }
    let series = observer
        .drain(
            paced.heartbeats,
            Duration::from_secs(1),
            Duration::from_secs(15),
        )
        .await;
    counter.abort();
    let received = count.load(Ordering::Relaxed);
    if received == 0 && paced.heartbeats > 0 {
        bail!("the nats subscriber received nothing");
    }
    let per_message = Summary::of(std::mem::take(
        &mut *latencies.lock().unwrap_or_else(|e| e.into_inner()),
    ));
    Ok(SteadyPeer {
        paced,
        series,
        received,
        per_message,
    })
}
