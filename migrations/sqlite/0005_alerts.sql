-- Reap3r schema 0005 (alert rules, their persisted per-agent state, alert events with history
-- and notes), SQLite dialect.
-- Kept column-for-column identical to migrations/postgres/0005_alerts.sql.

-- kind is the rule kind's name; spec is its JSON (thresholds, durations); scope is JSON lists
-- of tag, folder and agent ids.
CREATE TABLE alert_rules (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    enabled     BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    severity    TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    kind        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NULL,
    UNIQUE (org_id, name)
);

-- What a rule actor resumes from: one row per (rule, agent) whose alert is pending or firing.
CREATE TABLE alert_rule_state (
    rule_id     TEXT NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    agent_id    TEXT NOT NULL,
    phase       TEXT NOT NULL CHECK (phase IN ('pending', 'firing')),
    since       BIGINT NOT NULL,
    fired_at    BIGINT NULL,
    last_value  DOUBLE PRECISION NULL,
    event_id    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (rule_id, agent_id)
);

-- One row per (rule, agent) while active; kept after it resolves (history). rule_id and
-- agent_id have no foreign keys on purpose: events outlive deleted rules and agents.
CREATE TABLE alert_events (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    rule_id       TEXT NOT NULL,
    rule_name     TEXT NOT NULL,
    agent_id      TEXT NULL,
    severity      TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state         TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    summary       TEXT NOT NULL,
    value         DOUBLE PRECISION NULL,
    pending_at    BIGINT NOT NULL,
    fired_at      BIGINT NULL,
    resolved_at   BIGINT NULL,
    resolved_by   TEXT NULL,
    acked_at      BIGINT NULL,
    acked_by      TEXT NULL,
    snoozed_until BIGINT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX alert_events_org_pending ON alert_events (org_id, pending_at, id);
CREATE INDEX alert_events_org_state ON alert_events (org_id, state);
CREATE INDEX alert_events_rule ON alert_events (rule_id, state);

-- Every transition of an event, automated (actor 'system') or by an operator.
CREATE TABLE alert_event_history (
    id        TEXT PRIMARY KEY NOT NULL,
    event_id  TEXT NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    -- Order within the event (several transitions can share a millisecond).
    seq       BIGINT NOT NULL,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NULL
);
CREATE UNIQUE INDEX alert_event_history_event ON alert_event_history (event_id, seq);

CREATE TABLE alert_event_notes (
    id         TEXT PRIMARY KEY NOT NULL,
    event_id   TEXT NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    author     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX alert_event_notes_event ON alert_event_notes (event_id, created_at);
