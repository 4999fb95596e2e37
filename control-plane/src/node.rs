//! One running control-plane node: store, identity, actors and the QUIC gateway, with a
//! graceful shutdown that tells every agent why it is being disconnected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Endpoint;
use ractor::ActorRef;
use reap3r_actors::{
    Clock, EventBus, FleetContext, FleetSettings, FleetStats, PresenceMsg, PresenceWriter,
    SessionRegistry, SessionSupervisor, SupervisorMsg, SystemClock,
};
use reap3r_store::Store;
use reap3r_wire::{AgentConfig, CloseCode};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::gateway::{self, GatewayError};
use crate::identity::{IdentityError, ServerIdentity};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("database: {0}")]
    Store(#[from] reap3r_store::StoreError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("actor system: {0}")]
    Actors(String),
}

/// Opens the configured store: PostgreSQL when a URL is set, else SQLite in the data dir.
pub async fn open_store(config: &Config) -> Result<Store, NodeError> {
    crate::identity::create_private_dir(&config.data_dir)?;
    Ok(match &config.database_url {
        Some(url) => Store::open(url).await?,
        None => Store::open_sqlite_file(&config.data_dir.join("reap3r.db")).await?,
    })
}

pub struct Node {
    pub config: Config,
    pub quic_addr: SocketAddr,
    pub store: Store,
    pub identity: Arc<ServerIdentity>,
    pub ctx: FleetContext,
    pub registry: SessionRegistry,
    supervisor: ActorRef<SupervisorMsg>,
    presence: ActorRef<PresenceMsg>,
    endpoint: Endpoint,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("quic_addr", &self.quic_addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Builds and starts everything; ports are bound last, after the store and identity load.
    pub async fn start(config: Config) -> Result<Self, NodeError> {
        let store = open_store(&config).await?;
        let identity = Arc::new(ServerIdentity::load_or_create(&config.data_dir)?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let stale = store
            .mark_node_agents_offline(&config.node_id, clock.now_ms() as i64)
            .await?;
        if stale > 0 {
            info!(
                agents = stale,
                "cleared presence left over from the previous run"
            );
        }
        let settings = FleetSettings {
            node_id: config.node_id.clone(),
            agent_config: AgentConfig {
                heartbeat_interval_s: config.heartbeat_interval_s,
                metrics_interval_s: config.heartbeat_interval_s.saturating_mul(2),
            },
            missed_heartbeats: config.missed_heartbeats,
            handshake_timeout_ms: 10_000,
            presence_flush_ms: 1_000,
        };
        let idle = Duration::from_millis(settings.heartbeat_timeout_ms()) + Duration::from_secs(10);
        let ctx = FleetContext {
            store: store.clone(),
            server_key: Arc::new(identity.signing_key.clone()),
            clock,
            settings: Arc::new(settings),
            stats: Arc::new(FleetStats::default()),
            events: EventBus::default(),
        };
        let registry = SessionRegistry::default();
        let presence = PresenceWriter::start(ctx.clone(), registry.clone())
            .await
            .map_err(|e| NodeError::Actors(e.to_string()))?;
        let (supervisor, _) =
            SessionSupervisor::start(ctx.clone(), registry.clone(), presence.clone())
                .await
                .map_err(|e| NodeError::Actors(e.to_string()))?;
        let endpoint = gateway::bind_endpoint(config.quic_addr, &identity, idle)?;
        let quic_addr = endpoint.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.quic_addr,
            source,
        })?;
        let accept_task = tokio::spawn(gateway::accept_loop(
            endpoint.clone(),
            supervisor.clone(),
            ctx.stats.clone(),
            config.max_concurrent_handshakes,
        ));
        info!(%quic_addr, node = %config.node_id, fingerprint = %identity.fingerprint(), "QUIC gateway listening");
        Ok(Self {
            config,
            quic_addr,
            store,
            identity,
            ctx,
            registry,
            supervisor,
            presence,
            endpoint,
            accept_task,
        })
    }

    /// The address agents should dial.
    pub fn public_addr(&self) -> String {
        if self.config.public_addr.is_empty() {
            self.quic_addr.to_string()
        } else {
            self.config.public_addr.clone()
        }
    }

    pub fn stats(&self) -> &FleetStats {
        &self.ctx.stats
    }

    /// Stops accepting, tells every agent the server is shutting down, flushes presence and
    /// waits (up to the grace period) for connections to close.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.config.shutdown_grace;
        self.endpoint.set_server_config(None);
        let told = self
            .supervisor
            .call(
                |r| {
                    SupervisorMsg::KickAll(
                        CloseCode::ServerShutdown,
                        "server shutting down".into(),
                        r,
                    )
                },
                Some(Duration::from_secs(2)),
            )
            .await;
        info!(?told, "told agents the server is shutting down");
        while Instant::now() < deadline {
            let left = self
                .supervisor
                .call(SupervisorMsg::Count, Some(Duration::from_secs(1)))
                .await;
            if matches!(left, Ok(ractor::rpc::CallResult::Success(0))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(err) = self
            .presence
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await
        {
            warn!(%err, "presence writer did not stop cleanly");
        }
        self.supervisor.stop(None);
        // Sessions that did not finish within the grace period still hold leases on this node.
        let now = self.ctx.clock.now_ms() as i64;
        if let Err(err) = self
            .store
            .mark_node_agents_offline(&self.config.node_id, now)
            .await
        {
            warn!(%err, "could not release agent leases");
        }
        self.accept_task.abort();
        // Lets CONNECTION_CLOSE frames reach the agents.
        let _ = tokio::time::timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200)),
            self.endpoint.wait_idle(),
        )
        .await;
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::ServerShutdown as u32),
            b"server shutting down",
        );
        self.store.close().await;
        info!("node stopped");
    }
}
