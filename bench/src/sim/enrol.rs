//! Simulated agents' identities and enrolment: real Ed25519 keys registered with a real token
//! through the agent's own handshake (`reap3r_agent::protocol`), and the client endpoints many
//! agents share.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures::StreamExt;
use quinn::{Endpoint, VarInt};
use reap3r_agent::protocol::Challenged;
use reap3r_wire::{CloseCode, EnrolRequest, SERVER_NAME, SigningKey};

use super::{AGENT_VERSION, now_ms};
use crate::transport::{Pins, client_config, client_endpoint, close_kind, read_frame, write_frame};

/// An enrolled agent's identity: the id the server assigned and its private key.
#[derive(Clone)]
pub struct Identity {
    pub id: [u8; 16],
    pub key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &uuid::Uuid::from_bytes(self.id))
            .finish_non_exhaustive()
    }
}

fn new_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Client endpoints: agent `i` uses endpoint `i / per` and dials that endpoint's target (the
/// server, or the impairment relay in front of it).
pub struct Endpoints {
    pub endpoints: Vec<Endpoint>,
    pub targets: Vec<SocketAddr>,
    pub per: usize,
}

impl Endpoints {
    pub fn count(agents: usize, per: usize) -> usize {
        agents.div_ceil(per.max(1)).max(1)
    }

    pub fn new(targets: Vec<SocketAddr>, per: usize) -> Result<Self> {
        let endpoints = targets
            .iter()
            .map(|_| client_endpoint())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            targets,
            per: per.max(1),
        })
    }

    pub(super) fn for_agent(&self, idx: usize) -> (&Endpoint, SocketAddr) {
        let e = (idx / self.per).min(self.endpoints.len() - 1);
        (&self.endpoints[e], self.targets[e])
    }

    pub async fn close(&self) {
        for e in &self.endpoints {
            e.close(VarInt::from_u32(CloseCode::Normal as u32), b"bench done");
        }
        for e in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await;
        }
    }
}

/// Enrols `n` agents with `token`, `concurrency` at a time, straight to the server.
pub async fn enrol_all(
    server: SocketAddr,
    pins: &Pins,
    token: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Identity>> {
    let endpoints = Endpoints::new(vec![server; concurrency.div_ceil(64).clamp(1, 8)], 1)?;
    let config = client_config(pins.fingerprint, Duration::from_secs(30))?;
    let ids: Vec<Result<Identity>> = futures::stream::iter(0..n)
        .map(|i| {
            let (endpoint, target) = endpoints.for_agent(i % endpoints.endpoints.len());
            let endpoint = endpoint.clone();
            let config = config.clone();
            async move {
                let mut last = anyhow!("not tried");
                for attempt in 0..5u64 {
                    match enrol_one(&endpoint, target, &config, pins, token, i).await {
                        Ok(id) => return Ok(id),
                        Err(err) => last = err,
                    }
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                }
                Err(last.context(format!("enrolling agent {i}")))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    endpoints.close().await;
    ids.into_iter().collect()
}

async fn enrol_one(
    endpoint: &Endpoint,
    target: SocketAddr,
    config: &quinn::ClientConfig,
    pins: &Pins,
    token: &str,
    idx: usize,
) -> Result<Identity> {
    let key = new_key()?;
    let conn = endpoint
        .connect_with(config.clone(), target, SERVER_NAME)?
        .await?;
    let result = async {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let challenged = Challenged::from_frame(read_frame(&mut recv).await?, &pins.server_key)?;
        let request = EnrolRequest {
            token: token.to_string(),
            public_key: key.verifying_key().to_bytes(),
            hostname: format!("sim-{idx:06}"),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: AGENT_VERSION.into(),
        };
        let (frame, pending) = challenged.enrol(&key, request, now_ms());
        write_frame(&mut send, &frame).await?;
        let result = pending.enrolled(read_frame(&mut recv).await?)?;
        Ok(Identity {
            id: result.agent_id,
            key: key.clone(),
        })
    }
    .await;
    let result = result.map_err(|e: anyhow::Error| match conn.close_reason() {
        Some(reason) => anyhow!("{}: {e}", close_kind(&reason)),
        None => e,
    });
    conn.close(VarInt::from_u32(CloseCode::Normal as u32), b"enrolled");
    result
}
