//! The notifier: the long-lived actor (a child of the root supervisor) that delivers the
//! outbox. It wakes on a timer set to the next due row (at most [`NotifierSettings::idle_ms`]
//! apart, for rows other processes wrote) and on every [`super::outbox::nudge`]. Each wake claims
//! due rows, up to `concurrency` attempts in flight and `per_integration` per integration, so a
//! slow receiver holds only its own slots; each attempt runs in a task of its own, records its
//! end in the outbox, and tells the actor, which claims more. Nothing is kept in memory that
//! the outbox does not hold: a restarted notifier (or node) takes over from the rows, and a
//! claim whose attempt was interrupted is due again when its lease expires.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use reap3r_store::{ClaimedNotification, Uuid};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::NotificationMessage;
use super::channels::{ATTEMPT_TIMEOUT, Channel, Channels, SendReport};
use super::outbox;
use super::retry::{RetryPolicy, random_jitter};
use crate::Domain;

/// Attempts in flight at once, over all integrations.
pub const MAX_IN_FLIGHT: usize = 16;
/// Attempts in flight at once for one integration. Measured (docs/BENCHMARKS.md, "Alerting",
/// storm): with 2, one webhook received about 93 notifications/s and 10,000 did not get out in
/// 110 s; with 8, about 185/s and all 10,000 within 54 s. A receiver that rate-limits answers
/// 429 and the attempt is retried with backoff and jitter like any other failure.
pub const MAX_IN_FLIGHT_PER_INTEGRATION: usize = 8;
/// Longest sleep between two looks at the outbox.
pub const IDLE_WAKE_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifierSettings {
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub per_integration: usize,
    pub idle_ms: u64,
    /// How long a claim lasts: past it, an attempt that never finished is due again.
    pub lease_ms: i64,
}

impl Default for NotifierSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            concurrency: MAX_IN_FLIGHT,
            per_integration: MAX_IN_FLIGHT_PER_INTEGRATION,
            idle_ms: IDLE_WAKE_MS,
            lease_ms: i64::try_from(ATTEMPT_TIMEOUT.as_millis()).unwrap_or(i64::MAX) + 10_000,
        }
    }
}

#[derive(Debug)]
pub enum NotifierMsg {
    /// Look at the outbox (timer, nudge, or a test).
    Wake,
    /// An attempt of this integration ended and was recorded.
    Finished(Uuid),
    /// Answers once every message sent before it has been handled (a sync point for tests).
    Probe(RpcReplyPort<()>),
}

/// What the notifier is started with.
#[derive(Debug, Clone)]
pub struct NotifierArgs {
    pub domain: Domain,
    pub channels: Channels,
    pub settings: NotifierSettings,
}

#[derive(Debug)]
pub struct Notifier;

pub struct NotifierState {
    args: NotifierArgs,
    in_flight: usize,
    per_integration: HashMap<Uuid, usize>,
    timer: Option<JoinHandle<Result<(), ractor::MessagingErr<NotifierMsg>>>>,
    nudges: JoinHandle<()>,
}

impl Notifier {
    pub async fn spawn_linked(
        args: NotifierArgs,
        parent: ractor::ActorCell,
    ) -> Result<ActorRef<NotifierMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn_linked(None, Notifier, args, parent).await?;
        Ok(actor)
    }

    /// Starts a notifier on its own (tests without a node).
    pub async fn spawn(
        args: NotifierArgs,
    ) -> Result<(ActorRef<NotifierMsg>, JoinHandle<()>), ractor::SpawnErr> {
        Actor::spawn(None, Notifier, args).await
    }
}

impl NotifierState {
    fn now(&self) -> i64 {
        self.args.domain.now_ms()
    }

    /// Claims what is due and may run now, starts those attempts, and sets the next timer.
    async fn wake(&mut self, myself: &ActorRef<NotifierMsg>) {
        let free = self
            .args
            .settings
            .concurrency
            .saturating_sub(self.in_flight);
        if free > 0
            && let Err(e) = self.claim_and_start(myself, free).await
        {
            warn!(error = %e, "notifier cannot read the outbox; trying again at the next wake");
        }
        self.set_timer(myself).await;
    }

    async fn claim_and_start(
        &mut self,
        myself: &ActorRef<NotifierMsg>,
        mut free: usize,
    ) -> Result<(), crate::DomainError> {
        let store = &self.args.domain.store;
        let now = self.now();
        // Read more than fits, so busy integrations do not hide the others' due rows.
        let look = i64::try_from(free * 4).unwrap_or(64);
        for (id, integration) in store.due_notifications(now, look).await? {
            if free == 0 {
                break;
            }
            let busy = self.per_integration.get(&integration).copied().unwrap_or(0);
            if busy >= self.args.settings.per_integration {
                continue;
            }
            let mut tx = store.begin().await?;
            let claimed = tx
                .claim_notification(id, now, now.saturating_add(self.args.settings.lease_ms))
                .await?;
            tx.commit().await?;
            let Some(claimed) = claimed else {
                continue; // another node took it
            };
            free -= 1;
            self.in_flight += 1;
            *self.per_integration.entry(integration).or_default() += 1;
            let args = self.args.clone();
            let myself = myself.clone();
            tokio::spawn(async move {
                attempt(&args, claimed).await;
                let _ = myself.cast(NotifierMsg::Finished(integration));
            });
        }
        Ok(())
    }

    /// The next wake: when the next row falls due, at most `idle_ms` away. Rows that are due
    /// but waiting for a busy integration are picked up when its attempts finish.
    async fn set_timer(&mut self, myself: &ActorRef<NotifierMsg>) {
        let idle = self.args.settings.idle_ms;
        let now = self.now();
        let delay = match self.args.domain.store.next_notification_due().await {
            Ok(Some(due)) if due > now => u64::try_from(due - now).unwrap_or(idle).min(idle),
            _ => idle,
        };
        if let Some(old) = self.timer.take() {
            old.abort();
        }
        self.timer =
            Some(myself.send_after(Duration::from_millis(delay.max(1)), || NotifierMsg::Wake));
    }
}

/// One attempt: load the integration, send, record how it ended.
async fn attempt(args: &NotifierArgs, claimed: ClaimedNotification) {
    let row = &claimed.notification;
    let store = &args.domain.store;
    let report = match prepare(args, &claimed).await {
        Ok((channel, message)) => {
            args.channels
                .send(&channel, &message, row.id, args.domain.now_ms())
                .await
        }
        Err(why) => SendReport {
            delivered: false,
            answer: why,
            retry_after_ms: None,
        },
    };
    let now = args.domain.now_ms();
    let end = args
        .settings
        .retry
        .after_attempt(claimed.attempt, &report, now, random_jitter());
    debug!(notification = %row.id, attempt = claimed.attempt, ?end, "notification attempt ended");
    let recorded = async {
        let mut tx = store.begin().await?;
        let current = tx
            .finish_attempt(row.id, claimed.attempt, &end, now)
            .await?;
        tx.commit().await?;
        Ok::<bool, reap3r_store::StoreError>(current)
    };
    match recorded.await {
        Ok(true) => {}
        Ok(false) => {
            warn!(notification = %row.id, "attempt outlived its claim; a newer one owns the row")
        }
        // The claim expires and the row is tried again: at least once, never lost.
        Err(e) => warn!(notification = %row.id, error = %e, "cannot record a notification attempt"),
    }
}

async fn prepare(
    args: &NotifierArgs,
    claimed: &ClaimedNotification,
) -> Result<(Channel, NotificationMessage), String> {
    let row = &claimed.notification;
    let integration = args
        .domain
        .store
        .integration(row.org_id, row.integration_id)
        .await
        .map_err(|e| format!("cannot load the integration: {e}"))?
        .ok_or("the integration was deleted")?;
    let channel = Channel::decode(&integration, &args.domain.vault)?;
    let message: NotificationMessage = serde_json::from_str(&row.message)
        .map_err(|e| format!("the stored message is unreadable: {e}"))?;
    Ok((channel, message))
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = NotifierArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        args: NotifierArgs,
    ) -> Result<NotifierState, ActorProcessingErr> {
        let mut nudges = outbox::subscribe();
        let me = myself.clone();
        let nudges = tokio::spawn(async move {
            while nudges.changed().await.is_ok() {
                if me.cast(NotifierMsg::Wake).is_err() {
                    break;
                }
            }
        });
        // Rows left from before a restart are due now (or when their claims expire).
        myself.cast(NotifierMsg::Wake)?;
        Ok(NotifierState {
            args,
            in_flight: 0,
            per_integration: HashMap::new(),
            timer: None,
            nudges,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NotifierMsg>,
        msg: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NotifierMsg::Wake => state.wake(&myself).await,
            NotifierMsg::Finished(integration) => {
                state.in_flight = state.in_flight.saturating_sub(1);
                if let Some(n) = state.per_integration.get_mut(&integration) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        state.per_integration.remove(&integration);
                    }
                }
                state.wake(&myself).await;
            }
            NotifierMsg::Probe(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NotifierMsg>,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        state.nudges.abort();
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }
}
