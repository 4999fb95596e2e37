-- Notification routing (issue 12): policies, silences and maintenance windows (their specs are
-- JSON validated by the domain), the alert groups routing persists with every decision, and the
-- log of what it handed to the notifier.

CREATE TABLE routing_policies (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE routing_silences (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    spec        TEXT NOT NULL,
    starts_at   BIGINT NOT NULL,
    ends_at     BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX routing_silences_org_ends ON routing_silences (org_id, ends_at);

CREATE TABLE routing_maintenance (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

-- One row per live alert group: its alerts, timers and escalation step, as JSON. Written in the
-- transaction that enqueues the messages the same decision produced.
CREATE TABLE routing_groups (
    policy_id   TEXT NOT NULL,
    group_key   TEXT NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (policy_id, group_key)
);

-- What routing handed to the notifier: one row per enqueued notification (its id is the
-- outbox's idempotency id).
CREATE TABLE routing_sent (
    notification_id TEXT PRIMARY KEY NOT NULL,
    org_id          TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    policy_id       TEXT NOT NULL,
    group_key       TEXT NOT NULL,
    integration_id  TEXT NOT NULL,
    kind            TEXT NOT NULL,
    total           BIGINT NOT NULL,
    title           TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX routing_sent_org_created ON routing_sent (org_id, created_at);
