//! The root supervisor: owns every long-lived actor of a node — the presence writer, the metrics
//! writer, the session supervisor (one actor per live connection), the job supervisor (one actor
//! per active job), the notification routing driver and the notifier (which delivers the
//! notification outbox) and the alert supervisor (one actor per enabled rule) —
//! restarts whichever crashes, and runs the shutdown sequence over the node's one drain signal.
//!
//! Each child is found through an [`ActorSlot`], so a restarted child is reached by everyone who
//! held the old one. ractor's default would stop the root when a child fails; `handle_supervisor_evt`
//! overrides that. A crashed child's own children are stopped by ractor with it: sessions are
//! dropped (their agents reconnect), job actors are resumed from the database by the new job
//! supervisor, and the presence writer starts with an empty batch (`last_seen` is refreshed by
//! the next heartbeats), and the notifier takes over from its outbox rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use reap3r_store::Uuid;
use reap3r_wire::CloseCode;
use tracing::{error, info, warn};

use crate::AgentRouter;
use crate::alerts::{AlertSupervisor, AlertingArgs};
use crate::jobs::JobSupervisorMsg;
use crate::metrics::{MetricsWriter, MetricsWriterArgs, SampleSink};
use crate::notify::routing::{RoutingDriver, RoutingSink};
use crate::notify::{Notifier, NotifierArgs, NotifierMsg};
use crate::session::mark_offline;
use crate::slot::ActorSlot;
use crate::{
    FleetContext, FleetStats, JobSupervisor, PresenceMsg, PresenceWriter, SessionRegistry,
    SessionSupervisor, SupervisorMsg,
};

/// A child crashing more often than this within [`RESTART_WINDOW`] is restarted after
/// [`RESTART_BACKOFF`] instead of at once, so a crash loop cannot spin a core.
const MAX_QUICK_RESTARTS: u32 = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
const RESTART_BACKOFF: Duration = Duration::from_secs(5);

/// The long-lived children, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subsystem {
    Presence,
    Metrics,
    Jobs,
    Sessions,
    Routing,
    Notifier,
    /// Started only when the node runs alerting ([`RootArgs::alerting`]).
    Alerts,
}

impl Subsystem {
    fn name(self) -> &'static str {
        match self {
            Subsystem::Presence => "presence writer",
            Subsystem::Metrics => "metrics writer",
            Subsystem::Jobs => "job supervisor",
            Subsystem::Sessions => "session supervisor",
            Subsystem::Routing => "notification routing",
            Subsystem::Notifier => "notifier",
            Subsystem::Alerts => "alert supervisor",
        }
    }
}

/// Where each child is found; shared with the gateway, the API and the sessions.
#[derive(Debug, Clone, Default)]
pub struct Subsystems {
    pub presence: ActorSlot<PresenceMsg>,
    pub sessions: ActorSlot<SupervisorMsg>,
    /// Where alerting hands alert changes (its driver is the `Routing` child).
    pub routing: RoutingSink,
    pub notifier: ActorSlot<NotifierMsg>,
}

pub struct RootArgs {
    pub ctx: FleetContext,
    pub registry: SessionRegistry,
    /// How job actors reach agents.
    pub router: Arc<dyn AgentRouter>,
    pub subsystems: Subsystems,
    /// What the notifier delivers with.
    pub notifier: NotifierArgs,
    /// Handed every committed flush of metrics samples (alert evaluation).
    pub sample_sinks: Vec<Arc<dyn SampleSink>>,
    /// The alert supervisor's sink, sample queue and settings; `None` runs no alerting.
    pub alerting: Option<AlertingArgs>,
}

#[derive(Debug)]
pub enum RootMsg {
    /// Run the shutdown sequence within `grace`; replies when it is done.
    Shutdown(Duration, RpcReplyPort<()>),
    /// Start a child again (after a backoff).
    Restart(Subsystem),
    /// Test hook: make a child crash, to exercise supervision.
    #[cfg(feature = "fault-injection")]
    InjectFault(Subsystem),
}

#[derive(Debug)]
pub struct RootSupervisor;

pub struct RootState {
    args: RootArgs,
    children: HashMap<ActorId, Subsystem>,
    restarts: HashMap<Subsystem, (u32, Instant)>,
    stopping: bool,
}

impl RootSupervisor {
    pub async fn start(args: RootArgs) -> Result<ActorRef<RootMsg>, ractor::SpawnErr> {
        let (root, _) = Actor::spawn(None, RootSupervisor, args).await?;
        Ok(root)
    }
}

impl RootState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<RootMsg>,
        which: Subsystem,
    ) -> Result<(), ractor::SpawnErr> {
        let cell = myself.get_cell();
        let ctx = self.args.ctx.clone();
        let registry = self.args.registry.clone();
        let child: ActorCell = match which {
            Subsystem::Presence => {
                let presence = PresenceWriter::spawn_linked(ctx, registry, cell).await?;
                self.args.subsystems.presence.set(presence.clone());
                presence.get_cell()
            }
            Subsystem::Metrics => MetricsWriter::spawn_linked(
                MetricsWriterArgs {
                    store: ctx.store.clone(),
                    clock: ctx.clock.clone(),
                    settings: ctx.settings.metrics.clone(),
                    intake: ctx.metrics.clone(),
                    sinks: self.args.sample_sinks.clone(),
                    stats: ctx.stats.clone(),
                },
                cell,
            )
            .await?
            .get_cell(),
            Subsystem::Jobs => JobSupervisor::spawn_linked(ctx, self.args.router.clone(), cell)
                .await?
                .get_cell(),
            Subsystem::Sessions => {
                let sessions = SessionSupervisor::spawn_linked(
                    ctx,
                    registry,
                    self.args.subsystems.presence.clone(),
                    cell,
                )
                .await?;
                self.args.subsystems.sessions.set(sessions.clone());
                sessions.get_cell()
            }
            Subsystem::Routing => RoutingDriver::spawn_linked(
                ctx.domain(),
                self.args.subsystems.routing.clone(),
                cell,
            )
            .await?
            .get_cell(),
            Subsystem::Notifier => {
                let notifier = Notifier::spawn_linked(self.args.notifier.clone(), cell).await?;
                self.args.subsystems.notifier.set(notifier.clone());
                notifier.get_cell()
            }
            Subsystem::Alerts => {
                let Some(alerting) = self.args.alerting.clone() else {
                    return Ok(());
                };
                AlertSupervisor::spawn_linked(ctx.domain(), alerting, cell)
                    .await?
                    .get_cell()
            }
        };
        self.children.insert(child.get_id(), which);
        Ok(())
    }

    fn child(&self, which: Subsystem) -> Option<ActorCell> {
        match which {
            Subsystem::Presence => self.args.subsystems.presence.get().map(|a| a.get_cell()),
            Subsystem::Sessions => self.args.subsystems.sessions.get().map(|a| a.get_cell()),
            Subsystem::Jobs => self.args.ctx.jobs.get().map(|a| a.get_cell()),
            Subsystem::Routing => self
                .args
                .subsystems
                .routing
                .driver()
                .get()
                .map(|a| a.get_cell()),
            Subsystem::Notifier => self.args.subsystems.notifier.get().map(|a| a.get_cell()),
            Subsystem::Metrics => self
                .args
                .ctx
                .metrics
                .writer_slot()
                .get()
                .map(|a| a.get_cell()),
            Subsystem::Alerts => self
                .args
                .alerting
                .as_ref()
                .and_then(|a| a.samples.supervisor())
                .map(|a| a.get_cell()),
        }
    }

    /// Whether a restart may happen at once, or should wait out [`RESTART_BACKOFF`].
    fn quick_restart(&mut self, which: Subsystem) -> bool {
        let now = Instant::now();
        let entry = self.restarts.entry(which).or_insert((0, now));
        if now.duration_since(entry.1) > RESTART_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0 <= MAX_QUICK_RESTARTS
    }

    /// The shutdown sequence. The drain signal is already raised, so nothing new is admitted:
    /// 1. job actors commit what they hold and ack it while their agents are still connected;
    /// 2. sessions are told the server is shutting down and their agents go offline;
    /// 3. the presence writer flushes the last `last_seen` values.
    async fn shutdown(&mut self, grace: Duration) {
        self.stopping = true;
        let deadline = Instant::now() + grace;
        let left = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
        if let Some(jobs) = self.args.ctx.jobs.get() {
            let drained = jobs
                .call(
                    JobSupervisorMsg::Drain,
                    Some(left(deadline).max(Duration::from_millis(100))),
                )
                .await;
            info!(?drained, "job actors drained");
        }
        if let Some(sessions) = self.args.subsystems.sessions.get() {
            let closed = sessions
                .call(
                    |r| {
                        SupervisorMsg::Drain(
                            CloseCode::ServerShutdown,
                            "server shutting down".into(),
                            r,
                        )
                    },
                    Some(left(deadline).max(Duration::from_millis(100))),
                )
                .await;
            info!(?closed, "agent sessions closed");
        }
        // An attempt the notifier has in flight is cut off; its claim expires and the row is
        // sent again by the next node (receivers drop the duplicate by its idempotency id).
        for which in [
            Subsystem::Alerts,
            Subsystem::Routing,
            Subsystem::Notifier,
            Subsystem::Jobs,
            Subsystem::Sessions,
            Subsystem::Presence,
            Subsystem::Metrics,
        ] {
            if let Some(child) = self.child(which) {
                // The presence and metrics writers' post_stop flush; the supervisors hold
                // nothing unsaved. Metrics stop last: sessions may have queued samples.
                if let Err(err) = child
                    .stop_and_wait(None, Some(Duration::from_secs(5)))
                    .await
                {
                    warn!(%err, subsystem = which.name(), "did not stop cleanly");
                }
            }
        }
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState {
            args,
            children: HashMap::new(),
            restarts: HashMap::new(),
            stopping: false,
        };
        for which in [
            Subsystem::Presence,
            Subsystem::Metrics,
            Subsystem::Jobs,
            Subsystem::Sessions,
            Subsystem::Routing,
            Subsystem::Notifier,
            Subsystem::Alerts,
        ] {
            state.spawn(&myself, which).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Shutdown(grace, reply) => {
                state.shutdown(grace).await;
                let _ = reply.send(());
            }
            RootMsg::Restart(which) => {
                if state.stopping {
                    return Ok(());
                }
                if let Err(err) = state.spawn(&myself, which).await {
                    error!(%err, subsystem = which.name(), "restart failed; trying again");
                    myself.send_after(RESTART_BACKOFF, move || RootMsg::Restart(which));
                }
            }
            #[cfg(feature = "fault-injection")]
            RootMsg::InjectFault(which) => {
                if let Some(child) = state.child(which) {
                    child.kill();
                }
            }
        }
        Ok(())
    }

    /// Overrides ractor's default (which would stop the root): a child that stops while the node
    /// is not shutting down is logged, counted and started again.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(which) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.stopping {
            return Ok(());
        }
        FleetStats::bump(&state.args.ctx.stats.subsystem_restarts);
        error!(subsystem = which.name(), %why, "subsystem stopped; restarting it");
        if which == Subsystem::Sessions {
            // Its sessions were stopped with it (their agents reconnect); what is still
            // registered is stale, and those agents are offline until they do.
            let registry = &state.args.registry;
            for agent_id in registry.agent_ids() {
                let Some(session) = registry.get(agent_id) else {
                    continue;
                };
                if registry.unregister_if(agent_id, session.get_id()) {
                    let ctx = state.args.ctx.clone();
                    tokio::spawn(async move {
                        mark_offline(&ctx, agent_id, Uuid::nil(), "session supervisor restarted")
                            .await;
                    });
                }
            }
        }
        if state.quick_restart(which) {
            if let Err(err) = state.spawn(&myself, which).await {
                error!(%err, subsystem = which.name(), "restart failed; trying again");
                myself.send_after(RESTART_BACKOFF, move || RootMsg::Restart(which));
            }
        } else {
            myself.send_after(RESTART_BACKOFF, move || RootMsg::Restart(which));
        }
        Ok(())
    }
}
