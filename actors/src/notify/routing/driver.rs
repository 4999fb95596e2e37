//! The routing driver: a long-lived actor (a child of the root supervisor) that carries out the
//! core's effects. Alerting hands it committed changes through [`RoutingSink`] (an
//! [`AlertSink`]) without blocking: changes are batched in a capped queue and the actor is
//! poked once per batch. Each batch's enqueues, their log rows and the groups they changed
//! commit in ONE transaction, so a restart neither loses a due notification nor sends one
//! twice; on start (and after a failed commit) the core is rebuilt from those tables and
//! reconciled with `alert_events` (what a crash lost between alerting's commit and routing's is
//! routed then, see [`super::reconcile`]). It wakes
//! with `send_after` timers at the times the core asks for, and reloads its configuration when
//! a routing change's audit record is published.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use reap3r_store::{RoutingGroupRow, RoutingKind, RoutingSent, Uuid};
use tracing::{error, info, warn};

use super::core::{Effect, Input, RoutingConfig, RoutingCore};
use super::group::Group;
use super::manage::{ROUTING_AUDIT_PREFIX, Saved};
use super::model::{PolicySpec, SilenceSpec, WindowSpec};
use super::reconcile;
use crate::alerts::{AgentFacts, AlertChange, AlertSink};
use crate::error::DomainResult;
use crate::notify::{NotificationKind, outbox};
use crate::slot::ActorSlot;
use crate::{Domain, FleetEvent};

/// Most changes waiting for the driver; past it new ones are dropped and logged (the driver is
/// far behind or down, and memory must stay bounded).
pub const MAX_PENDING_CHANGES: usize = 200_000;
/// How soon a failed commit is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub enum RoutingMsg {
    /// Changes are waiting in the sink's queue.
    Changes,
    /// A timer went off (tests send it after moving a manual clock).
    Tick,
    /// Policies, silences or windows changed.
    Reload,
}

/// Where alerting hands changes: a capped queue and the driver's slot.
#[derive(Clone, Default)]
pub struct RoutingSink {
    queue: Arc<Mutex<Vec<AlertChange>>>,
    driver: ActorSlot<RoutingMsg>,
}

impl std::fmt::Debug for RoutingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingSink").finish_non_exhaustive()
    }
}

impl RoutingSink {
    /// The driver, once it runs (tests poke it with [`RoutingMsg::Tick`]).
    pub fn driver(&self) -> &ActorSlot<RoutingMsg> {
        &self.driver
    }

    fn take(&self) -> Vec<AlertChange> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl AlertSink for RoutingSink {
    fn alert_changed(&self, change: AlertChange) {
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.len() >= MAX_PENDING_CHANGES {
                error!(event_id = %change.event_id, "routing queue full; alert change dropped");
                return;
            }
            queue.push(change);
            queue.len() == 1
        };
        // One poke per batch: the mailbox holds at most a few `Changes`, however many alerts.
        if first {
            self.driver.cast(RoutingMsg::Changes);
        }
    }
}

/// Every org's policies, live silences and maintenance windows, as the core takes them.
pub async fn load_config(domain: &Domain) -> DomainResult<RoutingConfig> {
    let now = domain.now_ms();
    let store = &domain.store;
    let mut config = RoutingConfig::default();
    for r in store.all_routing(RoutingKind::Policy, now).await? {
        config
            .policies
            .push(Saved::<PolicySpec>::from_record(r)?.into());
    }
    for r in store.all_routing(RoutingKind::Silence, now).await? {
        config
            .silences
            .push(Saved::<SilenceSpec>::from_record(r)?.into());
    }
    for r in store.all_routing(RoutingKind::Maintenance, now).await? {
        config
            .windows
            .push(Saved::<WindowSpec>::from_record(r)?.into());
    }
    Ok(config)
}

/// The core as persisted, and the changes it missed (to feed before any queued change).
async fn rebuild(domain: &Domain) -> DomainResult<(RoutingCore, Vec<AlertChange>)> {
    let config = load_config(domain).await?;
    let mut groups = Vec::new();
    for row in domain.store.routing_groups().await? {
        match serde_json::from_str::<Group>(&row.state) {
            Ok(group) => groups.push(group),
            Err(err) => warn!(%err, key = row.group_key, "unreadable routing group dropped"),
        }
    }
    let core = RoutingCore::new(config, groups);
    let missed = missed(domain, &core).await?;
    if !missed.is_empty() {
        info!(
            changes = missed.len(),
            "routing catches up on alert changes it missed"
        );
    }
    Ok((core, missed))
}

/// Reads the event rows the reconciliation compares the core's groups with.
async fn missed(domain: &Domain, core: &RoutingCore) -> DomainResult<Vec<AlertChange>> {
    let store = &domain.store;
    let mut events = store.firing_alert_events().await?;
    let firing: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    let tracked: HashSet<Uuid> = reconcile::tracked_firing(core.groups())
        .into_iter()
        .collect();
    let gone: Vec<Uuid> = tracked.difference(&firing).copied().collect();
    events.extend(store.alert_events_by_id(&gone).await?);
    // Agents are only described for firing events no group holds (usually none).
    let mut agents = HashMap::new();
    if events
        .iter()
        .any(|e| e.state == "firing" && e.agent_id.is_some() && !tracked.contains(&e.id))
    {
        for a in store.alert_agents(None).await? {
            agents.insert(a.id, AgentFacts::from(&a));
        }
    }
    Ok(reconcile::missed_changes(
        core.groups(),
        &events,
        &agents,
        domain.now_ms(),
    ))
}

#[derive(Debug)]
pub struct RoutingDriver;

pub struct RoutingState {
    domain: Domain,
    sink: RoutingSink,
    /// `None` after a failed commit: rebuilt from the tables before the next input.
    core: Option<RoutingCore>,
    /// Changes taken from the queue whose decisions are not committed yet.
    unsaved: Vec<AlertChange>,
    /// The earliest timer already asked for.
    timer_at: Option<i64>,
}

impl RoutingDriver {
    pub async fn spawn_linked(
        domain: Domain,
        sink: RoutingSink,
        parent: ractor::ActorCell,
    ) -> Result<ActorRef<RoutingMsg>, ractor::SpawnErr> {
        let (actor, _) =
            Actor::spawn_linked(None, RoutingDriver, (domain, sink.clone()), parent).await?;
        sink.driver.set(actor.clone());
        Ok(actor)
    }

    /// Starts the driver on its own (tests without a node).
    pub async fn start(
        domain: Domain,
        sink: RoutingSink,
    ) -> Result<ActorRef<RoutingMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(None, RoutingDriver, (domain, sink.clone())).await?;
        sink.driver.set(actor.clone());
        Ok(actor)
    }
}

impl RoutingState {
    /// Feeds the queued changes (then `input`, if any) to the core and commits what it decided.
    async fn step(&mut self, myself: &ActorRef<RoutingMsg>, input: Option<Input>) {
        if self.core.is_none() {
            match rebuild(&self.domain).await {
                Ok((core, missed)) => {
                    self.core = Some(core);
                    self.unsaved.splice(0..0, missed);
                }
                Err(err) => {
                    error!(%err, "routing state cannot be loaded; retrying");
                    myself.send_after(RETRY_DELAY, || RoutingMsg::Tick);
                    return;
                }
            }
        }
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let now = self.domain.now_ms();
        self.unsaved.extend(self.sink.take());
        let changes = self.unsaved.iter().cloned().map(Input::Change);
        let effects = core.handle_batch(now, changes.chain(input));
        let dirty = core.take_dirty();
        let mut wake = None;
        let mut tx = match self.domain.begin().await {
            Ok(tx) => tx,
            Err(err) => return self.failed(myself, err),
        };
        let result: DomainResult<()> = async {
            for effect in effects {
                match effect {
                    Effect::Wake(at) => wake = Some(wake.map_or(at, |w: i64| w.min(at))),
                    Effect::Enqueue {
                        policy_id,
                        integration_id,
                        message,
                    } => {
                        // A policy naming an integration deleted since is skipped, not
                        // retried: it would fail the whole batch forever.
                        let id = match outbox::enqueue(
                            &mut tx,
                            message.org_id,
                            integration_id,
                            &message,
                            now,
                        )
                        .await
                        {
                            Ok(id) => id,
                            Err(crate::DomainError::NotFound(_)) => {
                                warn!(%policy_id, %integration_id, "policy names a missing integration; not sent");
                                continue;
                            }
                            Err(err) => return Err(err),
                        };
                        tx.record_routing_sent(&RoutingSent {
                            notification_id: id,
                            org_id: message.org_id,
                            policy_id,
                            group_key: message.group_key.clone(),
                            integration_id,
                            kind: kind_name(message.kind).to_owned(),
                            total: i64::try_from(message.total).unwrap_or(i64::MAX),
                            title: message.title.clone(),
                            created_at: now,
                        })
                        .await?;
                    }
                }
            }
            for ((policy_id, key), group) in dirty {
                match group {
                    Some(group) => {
                        let state = serde_json::to_string(&group).map_err(|e| {
                            crate::DomainError::unavailable(format!("group not storable: {e}"))
                        })?;
                        tx.save_routing_group(&RoutingGroupRow {
                            policy_id,
                            group_key: key,
                            org_id: group.org_id,
                            state,
                            updated_at: now,
                        })
                        .await?;
                    }
                    None => tx.delete_routing_group(policy_id, &key).await?,
                }
            }
            Ok(())
        }
        .await;
        let committed = match result {
            Ok(()) => tx.commit().await.map(|_| ()).map_err(Into::into),
            Err(err) => Err(err),
        };
        match committed {
            Ok(()) => {
                self.unsaved.clear();
                outbox::nudge();
                if let Some(at) = wake {
                    self.schedule(myself, now, at);
                }
            }
            Err(err) => self.failed(myself, err),
        }
    }

    /// The batch did not commit: forget the core's unsaved decisions and try the same changes
    /// again on state rebuilt from the tables.
    fn failed(&mut self, myself: &ActorRef<RoutingMsg>, err: crate::DomainError) {
        error!(%err, pending = self.unsaved.len(), "routing commit failed; retrying");
        self.core = None;
        myself.send_after(RETRY_DELAY, || RoutingMsg::Tick);
    }

    fn schedule(&mut self, myself: &ActorRef<RoutingMsg>, now: i64, at: i64) {
        if self.timer_at.is_some_and(|t| t > now && t <= at) {
            return;
        }
        self.timer_at = Some(at);
        let delay = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
        myself.send_after(delay, || RoutingMsg::Tick);
    }
}

fn kind_name(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::Firing => "firing",
        NotificationKind::Resolved => "resolved",
        NotificationKind::Reminder => "reminder",
        NotificationKind::Escalation => "escalation",
        NotificationKind::Test => "test",
    }
}

impl Actor for RoutingDriver {
    type Msg = RoutingMsg;
    type State = RoutingState;
    type Arguments = (Domain, RoutingSink);

    async fn pre_start(
        &self,
        myself: ActorRef<RoutingMsg>,
        (domain, sink): Self::Arguments,
    ) -> Result<RoutingState, ActorProcessingErr> {
        let (core, missed) = rebuild(&domain).await?;
        // Reload when a routing change is durable (its audit record is published on commit).
        let mut events = domain.events.subscribe();
        let me = myself.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let reload = match events.recv().await {
                    Ok(FleetEvent::Audit { action, .. }) => {
                        action.starts_with(ROUTING_AUDIT_PREFIX)
                    }
                    Ok(_) => false,
                    // Missed events may have been routing changes.
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => break,
                };
                if reload && me.cast(RoutingMsg::Reload).is_err() {
                    break;
                }
            }
        });
        let mut state = RoutingState {
            domain,
            sink,
            core: Some(core),
            unsaved: missed,
            timer_at: None,
        };
        // What came due while the node was down is decided now.
        state.step(&myself, Some(Input::Tick)).await;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RoutingMsg>,
        msg: RoutingMsg,
        state: &mut RoutingState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoutingMsg::Changes => state.step(&myself, None).await,
            RoutingMsg::Tick => {
                state.timer_at = None;
                state.step(&myself, Some(Input::Tick)).await;
            }
            RoutingMsg::Reload => match load_config(&state.domain).await {
                Ok(config) => state.step(&myself, Some(Input::Config(config))).await,
                Err(err) => {
                    error!(%err, "routing configuration cannot be loaded; retrying");
                    myself.send_after(RETRY_DELAY, || RoutingMsg::Reload);
                }
            },
        }
        Ok(())
    }
}
