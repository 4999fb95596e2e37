//! Batches `last_seen` writes and withdraws sessions of agents revoked elsewhere.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use reap3r_store::Uuid;
use reap3r_wire::CloseCode;
use tracing::warn;

use crate::{FleetContext, FleetStats, SessionMsg, SessionRegistry};

/// Ids per revocation query, to keep statements small.
const REVOCATION_CHUNK: usize = 500;
/// Revocations are checked every this many flushes.
const REVOCATION_EVERY: u64 = 5;

#[derive(Debug)]
pub struct PresenceWriter;

#[derive(Debug)]
pub enum PresenceMsg {
    /// The agent was heard from at this time.
    Seen(Uuid, u64),
    /// Write pending `last_seen` values now.
    Flush,
}

pub struct PresenceState {
    ctx: FleetContext,
    registry: SessionRegistry,
    pending: HashMap<Uuid, u64>,
    flushes: u64,
}

impl PresenceWriter {
    /// Starts the writer under `parent` (the root supervisor).
    pub async fn spawn_linked(
        ctx: FleetContext,
        registry: SessionRegistry,
        parent: ractor::ActorCell,
    ) -> Result<ActorRef<PresenceMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn_linked(None, PresenceWriter, (ctx, registry), parent).await?;
        Ok(actor)
    }

    /// Starts the writer on its own (tests that drive sessions without a node).
    pub async fn start(
        ctx: FleetContext,
        registry: SessionRegistry,
    ) -> Result<ActorRef<PresenceMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(None, PresenceWriter, (ctx, registry)).await?;
        Ok(actor)
    }
}

impl Actor for PresenceWriter {
    type Msg = PresenceMsg;
    type State = PresenceState;
    type Arguments = (FleetContext, SessionRegistry);

    async fn pre_start(
        &self,
        myself: ActorRef<PresenceMsg>,
        (ctx, registry): Self::Arguments,
    ) -> Result<PresenceState, ActorProcessingErr> {
        myself.send_interval(
            Duration::from_millis(ctx.settings.presence_flush_ms.max(10)),
            || PresenceMsg::Flush,
        );
        Ok(PresenceState {
            ctx,
            registry,
            pending: HashMap::new(),
            flushes: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PresenceMsg>,
        msg: PresenceMsg,
        state: &mut PresenceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PresenceMsg::Seen(id, at) => {
                let slot = state.pending.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
            PresenceMsg::Flush => {
                state.flush().await;
                state.flushes += 1;
                if state.flushes.is_multiple_of(REVOCATION_EVERY) {
                    state.withdraw_revoked().await;
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PresenceMsg>,
        state: &mut PresenceState,
    ) -> Result<(), ActorProcessingErr> {
        state.flush().await;
        Ok(())
    }
}

impl PresenceState {
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch: Vec<(Uuid, i64)> = self
            .pending
            .drain()
            .map(|(id, at)| (id, at as i64))
            .collect();
        match self.ctx.store.touch_last_seen(&batch).await {
            Ok(()) => FleetStats::bump(&self.ctx.stats.presence_flushes),
            Err(err) => {
                warn!(%err, agents = batch.len(), "last_seen flush failed; will retry");
                for (id, at) in batch {
                    self.pending.entry(id).or_insert(at as u64);
                }
            }
        }
    }

    /// Approval or revocation may change in another process (CLI, another node); sessions of
    /// agents no longer allowed are closed.
    async fn withdraw_revoked(&self) {
        let ids = self.registry.agent_ids();
        for chunk in ids.chunks(REVOCATION_CHUNK) {
            match self.ctx.store.agents_no_longer_allowed(chunk).await {
                Ok(gone) => {
                    for id in gone {
                        if let Some(session) = self.registry.get(id) {
                            let _ = session.cast(SessionMsg::Kick(
                                CloseCode::Revoked,
                                "agent access was withdrawn".into(),
                            ));
                        }
                    }
                }
                Err(err) => warn!(%err, "revocation check failed"),
            }
        }
    }
}
