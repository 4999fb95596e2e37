-- Reap3r schema 0004 (agent metrics: raw samples, rollups, rollup marks), PostgreSQL dialect.
-- Kept column-for-column identical to migrations/sqlite/0004_metrics.sql.

-- One row per sample of one agent, every series of the sample packed in `data` (the store's
-- codec: a label table, then metric code, label index and value per series). A row per sample
-- instead of a row per series keeps an index entry and a key per sample, not ~20.
-- agent_id has no foreign key on purpose: the check would cost a lookup per row at ingestion,
-- and rows of a deleted agent simply expire.
CREATE TABLE metric_samples (
    agent_id TEXT NOT NULL,
    taken_at BIGINT NOT NULL,
    org_id   TEXT NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (agent_id, taken_at)
);
-- Rollup passes and expiry read and delete by time range.
CREATE INDEX metric_samples_taken_at ON metric_samples (taken_at);

-- One row per (level, agent, bucket): level is the bucket width in ms (60000, 300000, 3600000,
-- 86400000); data packs min, max, sum, count, last and the time of last for every series.
CREATE TABLE metric_rollups (
    level    BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    bucket   BIGINT NOT NULL,
    org_id   TEXT NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (level, agent_id, bucket)
);
CREATE INDEX metric_rollups_level_bucket ON metric_rollups (level, bucket);

-- Per level, every bucket before done_until is rolled up: a pass reads only what came after.
CREATE TABLE metric_rollup_marks (
    level      BIGINT PRIMARY KEY NOT NULL,
    done_until BIGINT NOT NULL
);
