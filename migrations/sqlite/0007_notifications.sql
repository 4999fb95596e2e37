-- Reap3r schema 0007 (notification integrations and the notifier's outbox), SQLite dialect.
-- Kept column-for-column identical to migrations/postgres/0007_notifications.sql.

-- Where notifications go: one SMTP, webhook, Slack, Teams or Discord channel of an org.
-- `config` is the channel's JSON settings (host, port, recipients, URL of a generic webhook);
-- `secrets` is JSON too (SMTP password, HMAC secret, a chat hook URL): it is never returned by
-- the API, which only says which are set. It is not wrapped yet: the vault (master key outside
-- the database) is planned and should take these over.
CREATE TABLE alert_integrations (
    id         TEXT PRIMARY KEY NOT NULL,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    config     TEXT NOT NULL,
    secrets    TEXT NOT NULL,
    enabled    BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NULL,
    UNIQUE (org_id, name)
);

-- The notifier's durable outbox and delivery log. A row is written in the transaction that
-- decides to notify; its id is the idempotency id sent with every attempt. state: pending
-- (due at next_attempt_at), sending (claimed until claimed_until; an interrupted attempt is
-- due again after that), delivered, dead (after the last attempt; last_error says why).
CREATE TABLE alert_notifications (
    id              TEXT PRIMARY KEY NOT NULL,
    org_id          TEXT NOT NULL REFERENCES orgs (id),
    integration_id  TEXT NOT NULL REFERENCES alert_integrations (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    message         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT NULL,
    last_error      TEXT NULL,
    last_answer     TEXT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT NULL
);
CREATE INDEX alert_notifications_due ON alert_notifications (state, next_attempt_at);
CREATE INDEX alert_notifications_org ON alert_notifications (org_id, created_at);
CREATE INDEX alert_notifications_integration ON alert_notifications (integration_id);
