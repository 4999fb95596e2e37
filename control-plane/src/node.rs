//! One running control-plane node: store, identity, actors and the QUIC gateway, with a
//! graceful shutdown that tells every agent why it is being disconnected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::listener::{Acceptor, Listener, TcpListener};
use quinn::Endpoint;
use ractor::ActorRef;
use reap3r_actors::alerts::{AlertSamples, AlertSettings, AlertSink, AlertingArgs};
use reap3r_actors::files::{BlobStore, FileHub};
use reap3r_actors::jobs::JobSupervisorMsg;
use reap3r_actors::metrics::{MetricsIntake, MetricsSettings, SampleSink};
use reap3r_actors::notify::{Channels, NotifierArgs, NotifierSettings, NotifySettings};
use reap3r_actors::shell::ShellHub;
use reap3r_actors::{
    AgentCommand, AgentRouter, Clock, Domain, Drain, EventBus, FleetContext, FleetSettings,
    FleetStats, JobEngine, JobRouter, LocalRouter, RootArgs, RootMsg, RootSupervisor,
    SessionRegistry, SignatureVerifier, Subsystems, SystemClock,
};
use reap3r_api::metrics::HttpMetrics;
use reap3r_api::{ApiContext, ApiSettings, EnrolmentInfo, NodeHooks};
use reap3r_store::{Store, Uuid};
use reap3r_wire::{AgentConfig, CloseCode};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api_tls::{self, ApiTlsConfig};
use crate::config::{ApiTls, Config};
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
    /// The master key is missing or not the database's: the node does not start.
    #[error("vault: {0}")]
    Vault(#[from] reap3r_actors::vault::UnlockError),
    #[error("API TLS: {0}")]
    ApiTls(String),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How often secrets whose rotation policy is due are looked for.
const ROTATION_SWEEP: Duration = Duration::from_secs(60);

/// Rotates secrets by policy until the node drains. A failed sweep is logged and the next one
/// tries again: each rotation is its own transaction, so nothing is half done.
async fn rotate_secrets(domain: Domain, mut drain: reap3r_actors::DrainSignal) {
    let mut every = tokio::time::interval(ROTATION_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(e) = reap3r_actors::vault::sweep(&domain).await {
                    tracing::warn!(error = %e, "vault: rotation sweep failed");
                }
            }
            () = drain.started() => return,
        }
    }
}

/// What the API may ask of the node: readiness, and withdrawing an agent's live session.
struct NodeLink {
    router: Arc<dyn AgentRouter>,
    quic_listening: Arc<AtomicBool>,
}

impl NodeHooks for NodeLink {
    fn quic_listening(&self) -> bool {
        self.quic_listening.load(Ordering::Relaxed)
    }

    fn withdraw_agent(&self, agent_id: Uuid, reason: &str) {
        // Not connected here: nothing to close (its next hello is refused).
        self.router.deliver(
            agent_id,
            AgentCommand::Kick {
                code: CloseCode::Revoked,
                reason: format!("access withdrawn: {reason}"),
            },
        );
    }
}

/// The HTTP server task; it stops admitting requests at the drain signal.
struct HttpServer {
    task: JoinHandle<std::io::Result<()>>,
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
    pub http_addr: SocketAddr,
    /// What the API serves over TLS (`None`: plain HTTP).
    pub api_tls: Option<ApiTlsConfig>,
    pub api: ApiContext,
    /// Alerting's `SampleSink`: the metrics writer hands committed samples here.
    pub alert_samples: AlertSamples,
    http: HttpServer,
    quic_listening: Arc<AtomicBool>,
    pub store: Store,
    pub identity: Arc<ServerIdentity>,
    pub ctx: FleetContext,
    pub registry: SessionRegistry,
    /// Owns every long-lived actor; runs the shutdown sequence.
    pub root: ActorRef<RootMsg>,
    /// The remote shells this node relays.
    pub shells: ShellHub,
    /// The file transfers this node runs.
    pub files: FileHub,
    /// The one drain signal: raised once at shutdown, watched by every subsystem.
    drain: Drain,
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
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let keys = reap3r_actors::vault::unlock(&store, config.key_source(), clock.now_ms() as i64)
            .await?;
        let identity = Arc::new(ServerIdentity::load_or_create(&config.data_dir)?);
        // Loaded before anything binds; the files were checked with the configuration already.
        let api_tls = match &config.api_tls {
            ApiTls::Off => None,
            ApiTls::NodeCertificate => {
                Some(api_tls::node_config(&identity).map_err(NodeError::ApiTls)?)
            }
            ApiTls::Files { cert, key } => Some(
                api_tls::files_config(cert, key).map_err(|e| NodeError::ApiTls(e.join("; ")))?,
            ),
        };
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
                metrics_interval_s: config.metrics_interval_s,
            },
            missed_heartbeats: config.missed_heartbeats,
            handshake_timeout_ms: 10_000,
            presence_flush_ms: 1_000,
            job_grace_ms: config.job_grace_s.saturating_mul(1000),
            metrics: MetricsSettings {
                raw_retention_ms: i64::from(config.metrics_raw_retention_h) * 3_600_000,
                rollup_retention_ms: config
                    .metrics_rollup_retention_d
                    .map(|d| i64::from(d) * 86_400_000),
                intake_capacity: config.metrics_queue as usize,
                ..MetricsSettings::default()
            },
            release_key: crate::identity::release_public_key(&config.data_dir)?,
        };
        let metrics =
            MetricsIntake::new(settings.metrics.intake_capacity, settings.metrics.flush_max);
        let idle = Duration::from_millis(settings.heartbeat_timeout_ms()) + Duration::from_secs(10);
        let stats = Arc::new(FleetStats::default());
        let verifier =
            SignatureVerifier::start(SignatureVerifier::default_workers(), stats.clone())
                .map_err(|e| NodeError::Actors(format!("signature verifier: {e}")))?;
        let ctx = FleetContext {
            store: store.clone(),
            server_key: Arc::new(identity.signing_key.clone()),
            clock,
            settings: Arc::new(settings),
            stats,
            events: EventBus::default(),
            jobs: JobRouter::default(),
            verifier,
            metrics,
            keys,
        };
        // Values still plain from before the vault are sealed, and values left under an older
        // master key (a rotation a crash cut short) are moved to the primary, before serving.
        let resealed = reap3r_actors::vault::reseal_all(&ctx.domain(), "system:vault")
            .await
            .map_err(|e| NodeError::Actors(format!("vault: {e}")))?;
        if resealed != reap3r_actors::vault::ResealReport::default() {
            info!(
                sealed_plaintext = resealed.sealed_plaintext,
                resealed = resealed.resealed,
                "vault: sealed stored secrets under the primary master key"
            );
        }
        let registry = SessionRegistry::default();
        let router: Arc<dyn AgentRouter> = Arc::new(LocalRouter::new(registry.clone()));
        let subsystems = Subsystems::default();
        let channels = Channels::new(NotifySettings {
            allow_loopback: config.alerting_allow_loopback,
        })
        .map_err(NodeError::Actors)?;
        // Restart grace for offline alerts: an agent is declared offline by the heartbeat
        // timeout (missed_heartbeats × interval), so one that reconnects within that time after
        // this node started was down only because the node was. No offline (or approval)
        // clock starts before node start + grace.
        let node_started_ms = ctx.clock.now_ms() as i64;
        let restart_grace_ms = ctx.settings.heartbeat_timeout_ms() as i64;
        // Committed alert changes go to notification routing (the root's `Routing` child).
        let alert_sink: Arc<dyn AlertSink> = Arc::new(subsystems.routing.clone());
        let alert_samples = AlertSamples::default();
        let alerting = AlertingArgs {
            sink: alert_sink.clone(),
            samples: alert_samples.clone(),
            settings: AlertSettings {
                tick_ms: 1_000,
                reload_ms: 30_000,
                since_floor_ms: node_started_ms + restart_grace_ms,
            },
        };
        // The job supervisor resumes jobs left active by the previous run; dispatch waits for
        // agents to connect.
        let root = RootSupervisor::start(RootArgs {
            ctx: ctx.clone(),
            registry: registry.clone(),
            router: router.clone(),
            subsystems: subsystems.clone(),
            notifier: NotifierArgs {
                domain: ctx.domain(),
                channels: channels.clone(),
                settings: NotifierSettings::default(),
            },
            sample_sinks: vec![Arc::new(alert_samples.clone()) as Arc<dyn SampleSink>],
            alerting: Some(alerting),
        })
        .await
        .map_err(|e| NodeError::Actors(e.to_string()))?;
        let drain = Drain::default();
        let shells = ShellHub::new(
            ctx.domain(),
            router.clone(),
            ctx.server_key.clone(),
            config.node_id.clone(),
            config.shell.clone(),
        );
        let orphans = shells
            .recover()
            .await
            .map_err(|e| NodeError::Actors(format!("shell sessions: {e}")))?;
        if orphans > 0 {
            info!(
                sessions = orphans,
                "ended shell sessions left open by the previous run"
            );
        }
        shells.spawn_maintenance(drain.signal());
        let blobs = BlobStore::open(&config.data_dir.join("files"))
            .map_err(|e| NodeError::Actors(format!("file store: {e}")))?;
        let files = FileHub::new(
            ctx.domain(),
            router.clone(),
            ctx.server_key.clone(),
            config.node_id.clone(),
            config.files.clone(),
            blobs,
        );
        let orphans = files
            .recover()
            .await
            .map_err(|e| NodeError::Actors(format!("file transfers: {e}")))?;
        if orphans > 0 {
            info!(
                transfers = orphans,
                "failed the file transfers left unfinished by the previous run"
            );
        }
        let endpoint = gateway::bind_endpoint(config.quic_addr, &identity, idle)?;
        let quic_addr = endpoint.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.quic_addr,
            source,
        })?;
        tokio::spawn(rotate_secrets(ctx.domain(), drain.signal()));
        let accept_task = tokio::spawn(gateway::accept_loop(
            endpoint.clone(),
            subsystems.sessions.clone(),
            ctx.stats.clone(),
            config.max_concurrent_handshakes,
            drain.signal(),
        ));
        info!(%quic_addr, node = %config.node_id, fingerprint = %identity.fingerprint(), "QUIC gateway listening");
        let quic_listening = Arc::new(AtomicBool::new(true));
        // An ephemeral port in the configured address means "whatever was bound".
        let public_addr = if config.public_addr.is_empty() || config.public_addr.ends_with(":0") {
            quic_addr.to_string()
        } else {
            config.public_addr.clone()
        };
        let api = ApiContext {
            domain: ctx.domain(),
            store: store.clone(),
            clock: ctx.clock.clone(),
            events: ctx.events.clone(),
            fleet_stats: ctx.stats.clone(),
            metrics: Arc::new(HttpMetrics::default()),
            settings: Arc::new(ApiSettings {
                rate: config.api_rate,
                ..ApiSettings::default()
            }),
            enrolment: Arc::new(EnrolmentInfo {
                server_addr: public_addr,
                cert_fingerprint: identity.fingerprint(),
                server_key: identity.public_key_hex(),
            }),
            jobs: Some(JobEngine::new(ctx.clone())),
            shells: Some(shells.clone()),
            files: Some(files.clone()),
            alert_sink,
            node: Arc::new(NodeLink {
                router,
                quic_listening: quic_listening.clone(),
            }),
            notify: channels,
        };
        let (http, http_addr) =
            start_http(&config, api_tls.as_ref(), api.clone(), drain.signal()).await?;
        match &api_tls {
            None => info!(%http_addr, "HTTP API listening (docs at /docs)"),
            Some(tls) => {
                info!(%http_addr, fingerprint = %tls.fingerprint(), "HTTPS API listening (HTTP/2 and HTTP/1.1; docs at /docs)")
            }
        }
        Ok(Self {
            config,
            quic_addr,
            http_addr,
            api_tls,
            api,
            alert_samples,
            http,
            quic_listening,
            store,
            identity,
            ctx,
            registry,
            root,
            shells,
            files,
            drain,
            endpoint,
            accept_task,
        })
    }

    /// The API's base URL, `http://` or `https://` and the bound address.
    pub fn api_url(&self) -> String {
        let scheme = if self.api_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr)
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

    /// The job supervisor, where it runs (tests use it to inject faults).
    pub fn job_supervisor(&self) -> Option<ActorRef<JobSupervisorMsg>> {
        self.ctx.jobs.get()
    }

    /// Shuts down in one sequence over the drain signal, within the grace period:
    /// 1. raise the drain signal: the QUIC gateway and the HTTP server stop admitting (HTTP
    ///    requests in flight finish); the endpoint refuses new connections; shell sessions
    ///    end (their agents told, their recordings and records written);
    /// 2. the root supervisor drains: job actors commit and ack the results they hold while
    ///    agents are still connected, then sessions tell their agents the server is shutting
    ///    down and mark them offline, then presence flushes (see `RootSupervisor`);
    /// 3. leases still held (sessions that outlived the grace) are released;
    /// 4. CONNECTION_CLOSE frames get out, the endpoint closes, the store closes.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.config.shutdown_grace;
        let left = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
        self.drain.start();
        self.quic_listening.store(false, Ordering::Relaxed);
        self.endpoint.set_server_config(None);
        self.shells.shutdown(left(deadline)).await;
        self.files.shutdown(left(deadline)).await;
        match self
            .root
            .call(
                |r| RootMsg::Shutdown(left(deadline), r),
                Some(left(deadline) + Duration::from_secs(6)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(())) => {}
            other => warn!(?other, "shutdown sequence did not finish"),
        }
        self.root.stop(None);
        let _ = self.accept_task.await;
        // Sessions that did not finish within the grace period still hold leases on this node.
        let now = self.ctx.clock.now_ms() as i64;
        if let Err(err) = self
            .store
            .mark_node_agents_offline(&self.config.node_id, now)
            .await
        {
            warn!(%err, "could not release agent leases");
        }
        // Lets CONNECTION_CLOSE frames reach the agents.
        let _ = tokio::time::timeout(
            left(deadline).max(Duration::from_millis(200)),
            self.endpoint.wait_idle(),
        )
        .await;
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::ServerShutdown as u32),
            b"server shutting down",
        );
        match tokio::time::timeout(
            left(deadline).max(Duration::from_millis(200)),
            self.http.task,
        )
        .await
        {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => warn!(%err, "HTTP server stopped with an error"),
            Ok(Err(err)) => warn!(%err, "HTTP server task failed"),
            Err(_) => warn!("HTTP requests still running after the grace period"),
        }
        self.store.close().await;
        info!("node stopped");
    }
}

/// Binds the HTTP listener (so the real port is known, e.g. for port 0) and serves the API,
/// over TLS when configured.
async fn start_http(
    config: &Config,
    tls: Option<&ApiTlsConfig>,
    api: ApiContext,
    mut drain: reap3r_actors::DrainSignal,
) -> Result<(HttpServer, SocketAddr), NodeError> {
    let addr = config.http_addr;
    let acceptor = TcpListener::bind(addr)
        .into_acceptor()
        .await
        .map_err(|source| NodeError::HttpBind { addr, source })?;
    let bound = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(addr);
    let grace = config.shutdown_grace;
    let app = reap3r_api::app(api);
    let stop = async move { drain.started().await };
    let task = match tls {
        None => tokio::spawn(
            poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                app,
                stop,
                Some(grace),
            ),
        ),
        Some(tls) => tokio::spawn(
            poem::Server::new_with_acceptor(api_tls::TlsAcceptor::new(
                acceptor,
                tls.server.clone(),
            ))
            .run_with_graceful_shutdown(app, stop, Some(grace)),
        ),
    };
    Ok((HttpServer { task }, bound))
}
