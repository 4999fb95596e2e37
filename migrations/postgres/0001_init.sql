-- Reap3r initial schema, PostgreSQL dialect.
-- Kept column-for-column identical to migrations/sqlite/0001_init.sql: the store talks to both
-- through sqlx's Any driver, so only portable types are used (TEXT uuids, BIGINT unix-ms
-- timestamps, BIGINT 0/1 booleans, TEXT json, BYTEA bytes).

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    -- Always stored lower-cased so the UNIQUE constraint is case-insensitive.
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'active',
    created_at    BIGINT NOT NULL
);
CREATE INDEX users_org_id ON users (org_id);

CREATE TABLE enrollment_tokens (
    id               TEXT PRIMARY KEY NOT NULL,
    org_id           TEXT NOT NULL REFERENCES orgs (id),
    -- Hex BLAKE3 of the secret; the secret itself is never stored.
    token_hash       TEXT NOT NULL UNIQUE,
    label            TEXT NULL,
    expires_at       BIGINT NULL,
    max_uses         BIGINT NULL CHECK (max_uses IS NULL OR max_uses > 0),
    uses             BIGINT NOT NULL DEFAULT 0,
    revoked          BIGINT NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    require_approval BIGINT NOT NULL CHECK (require_approval IN (0, 1)),
    created_by       TEXT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX enrollment_tokens_org_id ON enrollment_tokens (org_id);

CREATE TABLE agents (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    hostname      TEXT NOT NULL,
    os            TEXT NOT NULL,
    arch          TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    public_key    BYTEA NOT NULL CHECK (octet_length(public_key) = 32),
    approval      TEXT NOT NULL CHECK (approval IN ('approved', 'pending', 'rejected')),
    revoked       BIGINT NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    connected     BIGINT NOT NULL DEFAULT 0 CHECK (connected IN (0, 1)),
    -- The control-plane node currently holding the agent's connection (the lease).
    node_id       TEXT NULL,
    capabilities  TEXT NOT NULL DEFAULT '[]',
    inventory     TEXT NOT NULL DEFAULT '{}',
    token_id      TEXT NULL REFERENCES enrollment_tokens (id) ON DELETE SET NULL,
    enrolled_at   BIGINT NOT NULL,
    last_seen     BIGINT NULL
);
CREATE INDEX agents_org_id ON agents (org_id);
CREATE INDEX agents_node_id ON agents (node_id);

-- Append-only, hash-chained. seq is assigned by the writer (last + 1 under a lock) so it has no
-- gaps, which verification relies on. org_id has no foreign key on purpose: the audit trail must
-- outlive the rows it talks about.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY NOT NULL,
    ts         BIGINT NOT NULL,
    org_id     TEXT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NULL,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_log_org_ts ON audit_log (org_id, ts);
