//! `alert_events` (one per rule and agent while active: pending → firing → resolved), their
//! history (every transition with who and when) and notes. Every transition is a guarded
//! `UPDATE … WHERE state …`, so two writers (a rule actor and an operator) cannot both resolve
//! one event: the second finds nothing to change.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::{
    Conditions, get_i64, get_opt_i64, get_opt_str, get_opt_uuid, get_str, get_uuid, uuid_text,
};
use crate::error::{Result, StoreError};
use crate::{Store, Tx};

/// Most events one page returns.
pub const MAX_ALERT_EVENT_PAGE: u32 = 200;
/// Longest note, in characters.
pub const MAX_ALERT_NOTE_CHARS: usize = 4000;
/// Ids per query of [`Store::alert_events_by_id`] (well below both backends' parameter limits).
const EVENTS_BY_ID_CHUNK: usize = 500;
/// Who automated transitions are recorded as in the history.
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub id: Uuid,
    pub org_id: Uuid,
    pub rule_id: Uuid,
    pub rule_name: String,
    pub agent_id: Option<Uuid>,
    pub severity: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    pub summary: String,
    pub value: Option<f64>,
    pub pending_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub snoozed_until: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAlertEvent {
    pub org_id: Uuid,
    pub rule_id: Uuid,
    pub rule_name: String,
    pub agent_id: Option<Uuid>,
    pub severity: String,
    pub summary: String,
    pub value: Option<f64>,
    pub pending_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertHistoryEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertNote {
    pub id: Uuid,
    pub author: String,
    pub body: String,
    pub created_at: i64,
}

/// Filters for a page of events, newest first; `before` is the last (pending_at, id) seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertEventFilter {
    pub state: Option<String>,
    pub severity: Option<String>,
    pub rule_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub before: Option<(i64, Uuid)>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertStats {
    /// Firing and not acknowledged.
    pub open: i64,
    /// Firing and acknowledged.
    pub acked: i64,
    /// Firing with severity critical.
    pub critical: i64,
    pub pending: i64,
    /// Agents with the most firing events: (agent, count), most first.
    pub top_agents: Vec<(Uuid, i64)>,
}

const EVENT_COLS: &str = "id, org_id, rule_id, rule_name, agent_id, severity, state, summary, \
     value, pending_at, fired_at, resolved_at, resolved_by, acked_at, acked_by, snoozed_until, \
     updated_at";

fn event_from_row(row: &AnyRow) -> Result<AlertEvent> {
    Ok(AlertEvent {
        id: get_uuid(row, "id")?,
        org_id: get_uuid(row, "org_id")?,
        rule_id: get_uuid(row, "rule_id")?,
        rule_name: get_str(row, "rule_name")?,
        agent_id: get_opt_uuid(row, "agent_id")?,
        severity: get_str(row, "severity")?,
        state: get_str(row, "state")?,
        summary: get_str(row, "summary")?,
        value: row.try_get::<Option<f64>, _>("value")?,
        pending_at: get_i64(row, "pending_at")?,
        fired_at: get_opt_i64(row, "fired_at")?,
        resolved_at: get_opt_i64(row, "resolved_at")?,
        resolved_by: get_opt_str(row, "resolved_by")?,
        acked_at: get_opt_i64(row, "acked_at")?,
        acked_by: get_opt_str(row, "acked_by")?,
        snoozed_until: get_opt_i64(row, "snoozed_until")?,
        updated_at: get_i64(row, "updated_at")?,
    })
}

/// Appends one history entry of an event.
async fn add_history(
    tx: &mut Tx,
    event_id: Uuid,
    at: i64,
    actor: &str,
    action: &str,
    detail: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO alert_event_history (id, event_id, seq, at, actor, action, detail) \
         SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5, $6 \
         FROM alert_event_history WHERE event_id = $2",
    )
    .bind(uuid_text(Uuid::new_v4()))
    .bind(uuid_text(event_id))
    .bind(at)
    .bind(actor.to_owned())
    .bind(action.to_owned())
    .bind(detail.map(str::to_owned))
    .execute(&mut *tx.conn())
    .await?;
    Ok(())
}

/// Resolves every open event of a rule (the rule was deleted or changed), with history.
pub(crate) async fn resolve_open_events_of_rule(
    tx: &mut Tx,
    rule_id: Uuid,
    reason: &str,
    now_ms: i64,
) -> Result<()> {
    let rows = sqlx::query(
        "UPDATE alert_events SET state = 'resolved', resolved_at = $2, resolved_by = $3, \
         updated_at = $2 WHERE rule_id = $1 AND state <> 'resolved' RETURNING id",
    )
    .bind(uuid_text(rule_id))
    .bind(now_ms)
    .bind(SYSTEM_ACTOR)
    .fetch_all(&mut *tx.conn())
    .await?;
    for row in rows {
        let id = get_uuid(&row, "id")?;
        add_history(tx, id, now_ms, SYSTEM_ACTOR, "resolved", Some(reason)).await?;
    }
    Ok(())
}

/// One event by id, optionally only if it is `org_id`'s, read inside `tx`.
async fn event_in(tx: &mut Tx, org_id: Uuid, id: Uuid) -> Result<Option<AlertEvent>> {
    let sql = format!("SELECT {EVENT_COLS} FROM alert_events WHERE id = $1 AND org_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(uuid_text(id))
        .bind(uuid_text(org_id))
        .fetch_optional(&mut *tx.conn())
        .await?;
    row.as_ref().map(event_from_row).transpose()
}

impl Tx {
    /// Opens an event in `pending` (history: `pending`).
    pub async fn open_alert_event(
        &mut self,
        new: &NewAlertEvent,
        now_ms: i64,
    ) -> Result<AlertEvent> {
        let sql = format!(
            "INSERT INTO alert_events (id, org_id, rule_id, rule_name, agent_id, severity, state, \
             summary, value, pending_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10) RETURNING {EVENT_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(Uuid::new_v4()))
            .bind(uuid_text(new.org_id))
            .bind(uuid_text(new.rule_id))
            .bind(new.rule_name.clone())
            .bind(new.agent_id.map(uuid_text))
            .bind(new.severity.clone())
            .bind(new.summary.clone())
            .bind(new.value)
            .bind(new.pending_at)
            .bind(now_ms)
            .fetch_one(&mut *self.conn())
            .await?;
        let event = event_from_row(&row)?;
        add_history(
            self,
            event.id,
            now_ms,
            SYSTEM_ACTOR,
            "pending",
            Some(&new.summary),
        )
        .await?;
        Ok(event)
    }

    /// pending → firing (history: `fired`); `None` if the event is no longer pending.
    pub async fn fire_alert_event(
        &mut self,
        id: Uuid,
        summary: &str,
        value: Option<f64>,
        now_ms: i64,
    ) -> Result<Option<AlertEvent>> {
        let sql = format!(
            "UPDATE alert_events SET state = 'firing', fired_at = $2, summary = $3, value = $4, \
             updated_at = $2 WHERE id = $1 AND state = 'pending' RETURNING {EVENT_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(now_ms)
            .bind(summary.to_owned())
            .bind(value)
            .fetch_optional(&mut *self.conn())
            .await?;
        let Some(row) = row else { return Ok(None) };
        add_history(self, id, now_ms, SYSTEM_ACTOR, "fired", Some(summary)).await?;
        event_from_row(&row).map(Some)
    }

    /// pending or firing → resolved, by `actor` (`system` when the condition cleared); `None`
    /// if it was already resolved. `org_id` scopes an operator's resolve.
    pub async fn resolve_alert_event(
        &mut self,
        org_id: Option<Uuid>,
        id: Uuid,
        actor: &str,
        detail: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<AlertEvent>> {
        let sql = format!(
            "UPDATE alert_events SET state = 'resolved', resolved_at = $2, resolved_by = $3, \
             updated_at = $2 WHERE id = $1 AND state <> 'resolved' \
             AND ($4 IS NULL OR org_id = $4) RETURNING {EVENT_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(now_ms)
            .bind(actor.to_owned())
            .bind(org_id.map(uuid_text))
            .fetch_optional(&mut *self.conn())
            .await?;
        let Some(row) = row else { return Ok(None) };
        add_history(self, id, now_ms, actor, "resolved", detail).await?;
        event_from_row(&row).map(Some)
    }

    /// An operator acknowledges an open event. `NotFound` if not `org_id`'s, `Conflict` if it
    /// is resolved or already acknowledged.
    pub async fn ack_alert_event(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        actor: &str,
        now_ms: i64,
    ) -> Result<AlertEvent> {
        let sql = format!(
            "UPDATE alert_events SET acked_at = $3, acked_by = $4, updated_at = $3 \
             WHERE id = $1 AND org_id = $2 AND state <> 'resolved' AND acked_at IS NULL \
             RETURNING {EVENT_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(now_ms)
            .bind(actor.to_owned())
            .fetch_optional(&mut *self.conn())
            .await?;
        let Some(row) = row else {
            return Err(match event_in(self, org_id, id).await? {
                None => StoreError::NotFound,
                Some(e) if e.state == "resolved" => {
                    StoreError::Conflict("alert is resolved".into())
                }
                Some(_) => StoreError::Conflict("alert is already acknowledged".into()),
            });
        };
        add_history(self, id, now_ms, actor, "acked", None).await?;
        event_from_row(&row)
    }

    /// Snoozes an open event until `until_ms` (routing sends nothing for it until then).
    pub async fn snooze_alert_event(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        until_ms: i64,
        actor: &str,
        now_ms: i64,
    ) -> Result<AlertEvent> {
        let sql = format!(
            "UPDATE alert_events SET snoozed_until = $3, updated_at = $4 \
             WHERE id = $1 AND org_id = $2 AND state <> 'resolved' RETURNING {EVENT_COLS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .bind(until_ms)
            .bind(now_ms)
            .fetch_optional(&mut *self.conn())
            .await?;
        let Some(row) = row else {
            return Err(match event_in(self, org_id, id).await? {
                None => StoreError::NotFound,
                Some(_) => StoreError::Conflict("alert is resolved".into()),
            });
        };
        let detail = format!("until {until_ms}");
        add_history(self, id, now_ms, actor, "snoozed", Some(&detail)).await?;
        event_from_row(&row)
    }

    /// Adds a note to an event of `org_id` (history: `note`).
    pub async fn add_alert_note(
        &mut self,
        org_id: Uuid,
        id: Uuid,
        author: &str,
        body: &str,
        now_ms: i64,
    ) -> Result<AlertNote> {
        if event_in(self, org_id, id).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let note = AlertNote {
            id: Uuid::new_v4(),
            author: author.to_owned(),
            body: body.to_owned(),
            created_at: now_ms,
        };
        sqlx::query(
            "INSERT INTO alert_event_notes (id, event_id, author, body, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid_text(note.id))
        .bind(uuid_text(id))
        .bind(note.author.clone())
        .bind(note.body.clone())
        .bind(now_ms)
        .execute(&mut *self.conn())
        .await?;
        add_history(self, id, now_ms, author, "note", None).await?;
        Ok(note)
    }
}

impl Store {
    /// One event of `org_id`.
    pub async fn alert_event(&self, org_id: Uuid, id: Uuid) -> Result<Option<AlertEvent>> {
        let sql = format!("SELECT {EVENT_COLS} FROM alert_events WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid_text(id))
            .bind(uuid_text(org_id))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// Every firing event of every organisation, by id: what notification routing compares its
    /// groups with when it starts.
    pub async fn firing_alert_events(&self) -> Result<Vec<AlertEvent>> {
        let sql =
            format!("SELECT {EVENT_COLS} FROM alert_events WHERE state = 'firing' ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The events with these ids, of any organisation (ids not found are left out), read
    /// `EVENTS_BY_ID_CHUNK` at a time.
    pub async fn alert_events_by_id(&self, ids: &[Uuid]) -> Result<Vec<AlertEvent>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(EVENTS_BY_ID_CHUNK) {
            let mut c = Conditions::default();
            let list: Vec<String> = chunk.iter().map(|id| c.text(uuid_text(*id))).collect();
            c.and(format!("id IN ({})", list.join(", ")));
            let sql = format!(
                "SELECT {EVENT_COLS} FROM alert_events{} ORDER BY id",
                c.where_sql()
            );
            let rows = c
                .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
                .fetch_all(self.pool())
                .await?;
            for row in &rows {
                out.push(event_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// A page of `org_id`'s events, newest first (keyset on pending_at, id).
    pub async fn list_alert_events(
        &self,
        org_id: Uuid,
        filter: &AlertEventFilter,
    ) -> Result<Vec<AlertEvent>> {
        let mut c = Conditions::default();
        let p = c.text(uuid_text(org_id));
        c.and(format!("org_id = {p}"));
        if let Some(state) = &filter.state {
            let p = c.text(state.clone());
            c.and(format!("state = {p}"));
        }
        if let Some(severity) = &filter.severity {
            let p = c.text(severity.clone());
            c.and(format!("severity = {p}"));
        }
        if let Some(rule) = filter.rule_id {
            let p = c.text(uuid_text(rule));
            c.and(format!("rule_id = {p}"));
        }
        if let Some(agent) = filter.agent_id {
            let p = c.text(uuid_text(agent));
            c.and(format!("agent_id = {p}"));
        }
        if let Some((at, id)) = filter.before {
            let a = c.int(at);
            let a2 = c.int(at);
            let i = c.text(uuid_text(id));
            c.and(format!(
                "(pending_at < {a} OR (pending_at = {a2} AND id < {i}))"
            ));
        }
        let limit = c.int(i64::from(filter.limit.clamp(1, MAX_ALERT_EVENT_PAGE)));
        let sql = format!(
            "SELECT {EVENT_COLS} FROM alert_events{} ORDER BY pending_at DESC, id DESC LIMIT {limit}",
            c.where_sql()
        );
        let rows = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// An event's history, oldest first.
    pub async fn alert_event_history(&self, event_id: Uuid) -> Result<Vec<AlertHistoryEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, detail FROM alert_event_history \
             WHERE event_id = $1 ORDER BY seq",
        )
        .bind(uuid_text(event_id))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertHistoryEntry {
                    at: get_i64(r, "at")?,
                    actor: get_str(r, "actor")?,
                    action: get_str(r, "action")?,
                    detail: get_opt_str(r, "detail")?,
                })
            })
            .collect()
    }

    /// An event's notes, oldest first.
    pub async fn alert_event_notes(&self, event_id: Uuid) -> Result<Vec<AlertNote>> {
        let rows = sqlx::query(
            "SELECT id, author, body, created_at FROM alert_event_notes \
             WHERE event_id = $1 ORDER BY created_at, id",
        )
        .bind(uuid_text(event_id))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertNote {
                    id: get_uuid(r, "id")?,
                    author: get_str(r, "author")?,
                    body: get_str(r, "body")?,
                    created_at: get_i64(r, "created_at")?,
                })
            })
            .collect()
    }

    /// Counts of `org_id`'s open events and the `top` agents with the most firing events.
    pub async fn alert_stats(&self, org_id: Uuid, top: u32) -> Result<AlertStats> {
        let row = sqlx::query(
            "SELECT \
             COALESCE(SUM(CASE WHEN state = 'firing' AND acked_at IS NULL THEN 1 ELSE 0 END), 0) AS open, \
             COALESCE(SUM(CASE WHEN state = 'firing' AND acked_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS acked, \
             COALESCE(SUM(CASE WHEN state = 'firing' AND severity = 'critical' THEN 1 ELSE 0 END), 0) AS critical, \
             COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS pending \
             FROM alert_events WHERE org_id = $1 AND state <> 'resolved'",
        )
        .bind(uuid_text(org_id))
        .fetch_one(self.pool())
        .await?;
        let count = |col: &str| -> Result<i64> { Ok(row.try_get::<i64, _>(col)?) };
        let top_rows = sqlx::query(
            "SELECT agent_id, COUNT(*) AS n FROM alert_events \
             WHERE org_id = $1 AND state = 'firing' AND agent_id IS NOT NULL \
             GROUP BY agent_id ORDER BY n DESC, agent_id LIMIT $2",
        )
        .bind(uuid_text(org_id))
        .bind(i64::from(top))
        .fetch_all(self.pool())
        .await?;
        Ok(AlertStats {
            open: count("open")?,
            acked: count("acked")?,
            critical: count("critical")?,
            pending: count("pending")?,
            top_agents: top_rows
                .iter()
                .map(|r| Ok((get_uuid(r, "agent_id")?, get_i64(r, "n")?)))
                .collect::<Result<_>>()?,
        })
    }
}
