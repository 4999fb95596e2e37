-- Reap3r schema 0011 (remote shells: sessions and their recordings), PostgreSQL dialect.
-- Kept identical to migrations/sqlite/0011_shell.sql but for the bytes type.

-- One remote shell: who opened it on which agent, its lifecycle and its byte counts. The agent
-- id is not a foreign key: a session's record outlives the agent's deletion.
CREATE TABLE shell_sessions (
    id                  TEXT PRIMARY KEY NOT NULL,
    org_id              TEXT NOT NULL REFERENCES orgs (id),
    agent_id            TEXT NOT NULL,
    -- The operator: the user who opened it (NULL for an API key's service account) and the
    -- actor as the audit names it.
    user_id             TEXT NULL,
    operator            TEXT NOT NULL,
    -- The credential that opened it (`session:<id>`, `api_key:<id>`, `cli`): only the same
    -- credential attaches, so another session of the same user (say, without its step-up)
    -- cannot take a shell over.
    opened_by           TEXT NOT NULL,
    node_id             TEXT NOT NULL,
    -- pending (granted, not attached yet), active, ended.
    status              TEXT NOT NULL,
    term_cols           BIGINT NOT NULL,
    term_rows           BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    -- The grant's deadline to start the shell.
    expires_at          BIGINT NOT NULL,
    started_at          BIGINT NULL,
    ended_at            BIGINT NULL,
    end_reason          TEXT NULL,
    exit_code           BIGINT NULL,
    bytes_in            BIGINT NOT NULL DEFAULT 0,
    bytes_out           BIGINT NOT NULL DEFAULT 0,
    -- The asciicast recording: uncompressed bytes written, compressed bytes stored.
    recording_bytes     BIGINT NOT NULL DEFAULT 0,
    recording_stored    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX shell_sessions_org_created ON shell_sessions (org_id, created_at);
CREATE INDEX shell_sessions_agent_status ON shell_sessions (agent_id, status);
CREATE INDEX shell_sessions_user_status ON shell_sessions (user_id, status);

-- A session's recording, in the order written: each chunk is a gzip member of the asciicast v2
-- text, so the chunks concatenated are one gzip file.
CREATE TABLE shell_recording_chunks (
    session_id  TEXT NOT NULL REFERENCES shell_sessions (id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (session_id, seq)
);
