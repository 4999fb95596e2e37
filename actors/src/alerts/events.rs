//! What operators do with alert events: read them (filtered pages, one with its notes and
//! history, counts), acknowledge, snooze, resolve by hand and add notes. Each change commits
//! with its audit record (`alert_event.ack|snooze|resolve|note`, target `alert_event:<id>`) and
//! its history entry; ack, snooze and resolve are then handed to routing (and ack and resolve
//! announced).
//!
//! A manual resolve also drops the rule's persisted state for the agent in the same
//! transaction, and the alert supervisor resets the rule actor's state when it sees the audit
//! event, so the rule starts over (a condition still holding opens a new event).

use reap3r_store::{
    AlertEvent, AlertEventFilter, AlertHistoryEntry, AlertNote, AlertStats, MAX_ALERT_EVENT_PAGE,
    MAX_ALERT_NOTE_CHARS, Uuid,
};
use serde_json::json;

use super::publish::announce_by_operator;
use super::{AlertChangeKind, AlertSink, Severity};
use crate::access::Caller;
use crate::error::{DomainError, DomainResult, required_text};
use crate::{Domain, audit};

/// Audit action of a manual resolve; the supervisor watches for it.
pub const RESOLVE_AUDIT_ACTION: &str = "alert_event.resolve";
/// Longest snooze, in seconds (7 days).
pub const MAX_SNOOZE_S: u32 = 7 * 24 * 3600;
/// Most agents `stats` lists as top alerting.
pub const MAX_TOP_AGENTS: u32 = 50;

fn event_target(id: Uuid) -> Option<String> {
    Some(format!("alert_event:{id}"))
}

fn store_err(e: reap3r_store::StoreError) -> DomainError {
    match e {
        reap3r_store::StoreError::Conflict(m) => DomainError::conflict(m),
        other => DomainError::from_store(other, "alert event"),
    }
}

/// Filters of a page of events; `before` is the `next` cursor of the previous page.
#[derive(Debug, Clone, Default)]
pub struct ListEvents {
    pub state: Option<String>,
    pub severity: Option<Severity>,
    pub rule_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub before: Option<String>,
    pub limit: Option<u32>,
}

/// One page and the cursor of the next (`None` on the last page).
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<AlertEvent>,
    pub next: Option<String>,
}

impl ListEvents {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<EventPage> {
        if let Some(state) = &self.state
            && !["pending", "firing", "resolved"].contains(&state.as_str())
        {
            return Err(DomainError::invalid(
                "state must be pending, firing or resolved",
            ));
        }
        let before = self.before.as_deref().map(parse_cursor).transpose()?;
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_ALERT_EVENT_PAGE {
            return Err(DomainError::invalid(format!(
                "limit must be between 1 and {MAX_ALERT_EVENT_PAGE}"
            )));
        }
        let events = domain
            .store
            .list_alert_events(
                caller.org_id,
                &AlertEventFilter {
                    state: self.state,
                    severity: self.severity.map(|s| s.as_str().to_owned()),
                    rule_id: self.rule_id,
                    agent_id: self.agent_id,
                    before,
                    limit,
                },
            )
            .await?;
        let next = (events.len() == limit as usize)
            .then(|| events.last().map(|e| format!("{}_{}", e.pending_at, e.id)))
            .flatten();
        Ok(EventPage { events, next })
    }
}

fn parse_cursor(s: &str) -> DomainResult<(i64, Uuid)> {
    let bad = || DomainError::invalid("before is not a cursor from a previous page");
    let (at, id) = s.split_once('_').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

/// One event with its notes and history.
#[derive(Debug, Clone)]
pub struct EventDetail {
    pub event: AlertEvent,
    pub notes: Vec<AlertNote>,
    pub history: Vec<AlertHistoryEntry>,
}

pub async fn get_event(domain: &Domain, caller: &Caller, id: Uuid) -> DomainResult<EventDetail> {
    let event = domain
        .store
        .alert_event(caller.org_id, id)
        .await?
        .ok_or(DomainError::NotFound("alert event"))?;
    Ok(EventDetail {
        notes: domain.store.alert_event_notes(id).await?,
        history: domain.store.alert_event_history(id).await?,
        event,
    })
}

/// Open, acknowledged and critical counts and the top alerting agents of the caller's org.
pub async fn alert_stats(domain: &Domain, caller: &Caller, top: u32) -> DomainResult<AlertStats> {
    if top == 0 || top > MAX_TOP_AGENTS {
        return Err(DomainError::invalid(format!(
            "top must be between 1 and {MAX_TOP_AGENTS}"
        )));
    }
    Ok(domain.store.alert_stats(caller.org_id, top).await?)
}

#[derive(Debug, Clone, Copy)]
pub struct AckAlert {
    pub id: Uuid,
}

impl AckAlert {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        sink: &dyn AlertSink,
    ) -> DomainResult<AlertEvent> {
        let now = domain.now_ms();
        let actor = caller.actor();
        let mut tx = domain.begin().await?;
        let event = tx
            .ack_alert_event(caller.org_id, self.id, &actor, now)
            .await
            .map_err(store_err)?;
        audit::record(
            &mut tx,
            caller,
            "alert_event.ack",
            event_target(self.id),
            json!({ "rule_id": event.rule_id, "agent_id": event.agent_id }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        announce_by_operator(domain, sink, &event, AlertChangeKind::Acked, &actor, now).await;
        Ok(event)
    }
}

#[derive(Debug, Clone)]
pub struct ResolveAlert {
    pub id: Uuid,
    pub reason: Option<String>,
}

impl ResolveAlert {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        sink: &dyn AlertSink,
    ) -> DomainResult<AlertEvent> {
        let reason = crate::optional_text("reason", self.reason.as_deref(), MAX_ALERT_NOTE_CHARS)?;
        let now = domain.now_ms();
        let actor = caller.actor();
        let mut tx = domain.begin().await?;
        let Some(event) = tx
            .resolve_alert_event(Some(caller.org_id), self.id, &actor, reason.as_deref(), now)
            .await?
        else {
            return Err(
                match domain.store.alert_event(caller.org_id, self.id).await? {
                    None => DomainError::NotFound("alert event"),
                    Some(_) => DomainError::conflict("alert is already resolved"),
                },
            );
        };
        if let Some(agent) = event.agent_id {
            tx.put_alert_rule_state(event.rule_id, agent, None, now)
                .await?;
        }
        audit::record(
            &mut tx,
            caller,
            RESOLVE_AUDIT_ACTION,
            event_target(self.id),
            json!({ "rule_id": event.rule_id, "agent_id": event.agent_id, "reason": reason }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        if event.fired_at.is_some() {
            // A pending event that never fired was never announced, so its end is not either.
            announce_by_operator(domain, sink, &event, AlertChangeKind::Resolved, &actor, now)
                .await;
        }
        Ok(event)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SnoozeAlert {
    pub id: Uuid,
    /// How long from now, in seconds.
    pub for_s: u32,
}

impl SnoozeAlert {
    pub async fn run(
        self,
        domain: &Domain,
        caller: &Caller,
        sink: &dyn AlertSink,
    ) -> DomainResult<AlertEvent> {
        if self.for_s == 0 || self.for_s > MAX_SNOOZE_S {
            return Err(DomainError::bad_request(
                "invalid_duration",
                format!("for_s must be between 1 and {MAX_SNOOZE_S} seconds"),
            ));
        }
        let now = domain.now_ms();
        let until = now + i64::from(self.for_s) * 1000;
        let actor = caller.actor();
        let mut tx = domain.begin().await?;
        let event = tx
            .snooze_alert_event(caller.org_id, self.id, until, &actor, now)
            .await
            .map_err(store_err)?;
        audit::record(
            &mut tx,
            caller,
            "alert_event.snooze",
            event_target(self.id),
            json!({ "until": until }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        // A pending event is not in routing yet; its `Fired` change will carry the snooze.
        if event.fired_at.is_some() {
            announce_by_operator(domain, sink, &event, AlertChangeKind::Snoozed, &actor, now).await;
        }
        Ok(event)
    }
}

#[derive(Debug, Clone)]
pub struct AddAlertNote {
    pub id: Uuid,
    pub body: String,
}

impl AddAlertNote {
    pub async fn run(self, domain: &Domain, caller: &Caller) -> DomainResult<AlertNote> {
        let body = required_text("body", &self.body, MAX_ALERT_NOTE_CHARS)?;
        let now = domain.now_ms();
        let mut tx = domain.begin().await?;
        let note = tx
            .add_alert_note(caller.org_id, self.id, &caller.actor(), &body, now)
            .await
            .map_err(store_err)?;
        audit::record(
            &mut tx,
            caller,
            "alert_event.note",
            event_target(self.id),
            json!({ "note_id": note.id }),
            now,
        )
        .await?;
        domain.commit(tx).await?;
        Ok(note)
    }
}
