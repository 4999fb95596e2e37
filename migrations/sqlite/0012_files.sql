-- Reap3r schema 0012 (file transfers: the content-addressed files an organisation holds, and
-- each push and pull), SQLite dialect.
-- Kept identical to migrations/postgres/0012_files.sql.

-- A file an organisation holds: uploaded by an operator (to push) or pulled from an agent. The
-- bytes are in the server's data dir, named by their BLAKE3 (hex), once for every organisation
-- that holds the same bytes; a row says that this organisation may read them.
CREATE TABLE file_blobs (
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    blake3      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    -- The upload's name, or the last component of the pulled path.
    name        TEXT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, blake3)
);
CREATE INDEX file_blobs_org_created ON file_blobs (org_id, created_at);

-- One transfer of one file to (push) or from (pull) one path on one agent. The agent id is not
-- a foreign key: a transfer's record outlives the agent's deletion.
CREATE TABLE file_transfers (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    agent_id    TEXT NOT NULL,
    -- push or pull.
    direction   TEXT NOT NULL,
    path        TEXT NOT NULL,
    -- A push: the file sent. A pull: the file received, once complete.
    blake3      TEXT NULL,
    -- A push: the file's size. A pull: the size the agent reported.
    size        BIGINT NULL,
    -- pending, running, complete, failed.
    status      TEXT NOT NULL,
    bytes_done  BIGINT NOT NULL DEFAULT 0,
    -- Channels opened for it (more than one: it resumed after a cut).
    attempts    BIGINT NOT NULL DEFAULT 0,
    user_id     TEXT NULL,
    operator    TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    started_at  BIGINT NULL,
    ended_at    BIGINT NULL,
    error       TEXT NULL
);
CREATE INDEX file_transfers_org_created ON file_transfers (org_id, created_at);
CREATE INDEX file_transfers_node_status ON file_transfers (node_id, status);
