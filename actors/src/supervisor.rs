//! Supervises agent sessions: spawns one per connection and survives any of them crashing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use reap3r_store::Uuid;
use reap3r_wire::CloseCode;
use tracing::{error, info};

use crate::session::mark_offline;
use crate::slot::ActorSlot;
use crate::{
    AgentLink, AgentSession, FleetContext, FleetStats, PresenceMsg, SessionArgs, SessionMsg,
};

/// Live sessions by agent id, shared with whoever routes messages to agents.
#[derive(Clone, Default)]
pub struct SessionRegistry(Arc<Mutex<HashMap<Uuid, ActorRef<SessionMsg>>>>);

impl std::fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionRegistry({} live)", self.len())
    }
}

impl SessionRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, ActorRef<SessionMsg>>> {
        // A poisoned map is still a valid map: every mutation is a single insert or remove.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `session` the live session of `agent_id`; returns the one it replaces.
    pub fn register(
        &self,
        agent_id: Uuid,
        session: ActorRef<SessionMsg>,
    ) -> Option<ActorRef<SessionMsg>> {
        self.lock().insert(agent_id, session)
    }

    /// Removes the entry only if it still belongs to `session`.
    pub fn unregister_if(&self, agent_id: Uuid, session: ActorId) -> bool {
        let mut map = self.lock();
        if map.get(&agent_id).is_some_and(|s| s.get_id() == session) {
            map.remove(&agent_id);
            return true;
        }
        false
    }

    fn remove_by_actor(&self, session: ActorId) -> Option<Uuid> {
        let mut map = self.lock();
        let agent_id = map
            .iter()
            .find(|(_, s)| s.get_id() == session)
            .map(|(id, _)| *id)?;
        map.remove(&agent_id);
        Some(agent_id)
    }

    pub fn get(&self, agent_id: Uuid) -> Option<ActorRef<SessionMsg>> {
        self.lock().get(&agent_id).cloned()
    }

    pub fn agent_ids(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub struct SessionSupervisor;

pub enum SupervisorMsg {
    /// Start a session for a new connection.
    Spawn(
        Arc<dyn AgentLink>,
        RpcReplyPort<Result<ActorRef<SessionMsg>, String>>,
    ),
    /// Close every session and reply once the last one has stopped (its agent marked offline).
    Drain(CloseCode, String, RpcReplyPort<usize>),
}

impl std::fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(link, _) => write!(f, "Spawn({})", link.remote()),
            Self::Drain(code, _, _) => write!(f, "Drain({code})"),
        }
    }
}

pub struct SupervisorArgs {
    pub ctx: FleetContext,
    pub registry: SessionRegistry,
    pub presence: ActorSlot<PresenceMsg>,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, (ActorRef<SessionMsg>, Arc<dyn AgentLink>)>,
    /// Waiting for the last session to stop: (sessions told, reply).
    drained: Vec<(usize, RpcReplyPort<usize>)>,
}

impl SupervisorState {
    fn answer_drained(&mut self) {
        if self.children.is_empty() {
            for (told, reply) in self.drained.drain(..) {
                let _ = reply.send(told);
            }
        }
    }
}

impl SessionSupervisor {
    /// Starts the supervisor under `parent` (the root supervisor).
    pub async fn spawn_linked(
        ctx: FleetContext,
        registry: SessionRegistry,
        presence: ActorSlot<PresenceMsg>,
        parent: ractor::ActorCell,
    ) -> Result<ActorRef<SupervisorMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            SessionSupervisor,
            SupervisorArgs {
                ctx,
                registry,
                presence,
            },
            parent,
        )
        .await?;
        Ok(actor)
    }

    /// Starts the supervisor on its own (tests that drive sessions without a node).
    pub async fn start(
        ctx: FleetContext,
        registry: SessionRegistry,
        presence: ActorSlot<PresenceMsg>,
    ) -> Result<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        let (actor, handle) = Actor::spawn(
            None,
            SessionSupervisor,
            SupervisorArgs {
                ctx,
                registry,
                presence,
            },
        )
        .await?;
        Ok((
            actor,
            tokio::spawn(async move {
                let _ = handle.await;
            }),
        ))
    }
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            children: HashMap::new(),
            drained: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Spawn(link, reply) => {
                let args = SessionArgs {
                    ctx: state.args.ctx.clone(),
                    link: link.clone(),
                    registry: state.args.registry.clone(),
                    presence: state.args.presence.clone(),
                };
                let spawned =
                    Actor::spawn_linked(None, AgentSession, args, myself.get_cell()).await;
                let result = match spawned {
                    Ok((session, _)) => {
                        state
                            .children
                            .insert(session.get_id(), (session.clone(), link));
                        Ok(session)
                    }
                    Err(err) => {
                        link.close(CloseCode::Internal, "could not start session");
                        Err(err.to_string())
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Drain(code, reason, reply) => {
                for (session, _) in state.children.values() {
                    let _ = session.cast(SessionMsg::Kick(code, reason.clone()));
                }
                state.drained.push((state.children.len(), reply));
                state.answer_drained();
            }
        }
        Ok(())
    }

    /// Overrides ractor's default (which would stop the supervisor): a failed session is logged,
    /// counted, its connection closed and its agent marked offline; the agent reconnects.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.children.remove(&cell.get_id());
                state.answer_drained();
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                FleetStats::bump(&state.args.ctx.stats.session_crashes);
                error!(session = %id, %err, "agent session crashed");
                if let Some((_, link)) = state.children.remove(&id) {
                    link.close(CloseCode::Internal, "session failed; reconnect");
                }
                if let Some(agent_id) = state.args.registry.remove_by_actor(id) {
                    let ctx = state.args.ctx.clone();
                    let registry = state.args.registry.clone();
                    tokio::spawn(async move {
                        // The agent may already have reconnected to a fresh session; then its
                        // presence belongs to that session and must not be overwritten.
                        if registry.get(agent_id).is_some() {
                            return;
                        }
                        // The org is unknown here; events carry the nil org and consumers look it up.
                        mark_offline(&ctx, agent_id, Uuid::nil(), "session crashed").await;
                    });
                }
                state.answer_drained();
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
            #[allow(unreachable_patterns)]
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        info!(
            sessions = state.children.len(),
            "session supervisor stopped"
        );
        Ok(())
    }
}
