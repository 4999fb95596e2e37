-- Reap3r schema 0003 (jobs and their per-agent targets), SQLite dialect.
-- Kept column-for-column identical to migrations/postgres/0003_jobs.sql.

-- A job: one request to run something on a set of agents. payload is the JSON the API was given
-- (for display), spec the hex of the signed JobSpec bytes, targets the JSON of the request's
-- target selector. The store only moves status forward from 'active'.
CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY NOT NULL,
    org_id              TEXT NOT NULL REFERENCES orgs (id),
    job_type            TEXT NOT NULL,
    payload             TEXT NOT NULL,
    spec                TEXT NOT NULL,
    targets             TEXT NOT NULL,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    timeout_s           BIGINT NOT NULL CHECK (timeout_s > 0),
    expires_at          BIGINT NULL,
    batch_size          BIGINT NULL CHECK (batch_size IS NULL OR batch_size > 0),
    status              TEXT NOT NULL CHECK (status IN ('active', 'completed', 'cancelled')),
    cancel_requested_at BIGINT NULL,
    finished_at         BIGINT NULL,
    total_targets       BIGINT NOT NULL
);
-- Newest-first keyset pages of an organisation's jobs.
CREATE INDEX jobs_org_created ON jobs (org_id, created_at, id);
-- Active jobs, loaded at node start.
CREATE INDEX jobs_status ON jobs (status);

-- One row per (job, agent). agent_id has no foreign key on purpose: an agent may be deleted
-- later and its results must stay. org_id is the job's, copied for scoped reads. A terminal
-- state (succeeded, failed, timed_out, cancelled, expired) never changes again: every write the
-- store makes is guarded by the state.
CREATE TABLE job_targets (
    job_id           TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    agent_id         TEXT NOT NULL,
    org_id           TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'acked', 'running',
                         'succeeded', 'failed', 'timed_out', 'cancelled', 'expired')),
    -- Hex of the encoded JobGrant and of its Ed25519 signature.
    grant_hex        TEXT NOT NULL,
    signature_hex    TEXT NOT NULL,
    queued_at        BIGINT NOT NULL,
    dispatched_at    BIGINT NULL,
    acked_at         BIGINT NULL,
    started_at       BIGINT NULL,
    finished_at      BIGINT NULL,
    exit_code        BIGINT NULL,
    stdout           TEXT NOT NULL DEFAULT '',
    stderr           TEXT NOT NULL DEFAULT '',
    stdout_truncated BIGINT NOT NULL DEFAULT 0 CHECK (stdout_truncated IN (0, 1)),
    stderr_truncated BIGINT NOT NULL DEFAULT 0 CHECK (stderr_truncated IN (0, 1)),
    -- Structured result (JSON text), if the job type produces one.
    data             TEXT NULL,
    error            TEXT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (job_id, agent_id)
);
-- What an agent still has to do.
CREATE INDEX job_targets_agent_state ON job_targets (agent_id, state);
