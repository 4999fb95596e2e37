-- Reap3r schema 0010 (secrets sealed to agents: the agent's key, a target's sealed env),
-- PostgreSQL dialect. Kept identical to migrations/sqlite/0010_sealed_env.sql.

-- The agent's X25519 public key for sealed secrets (64 hex characters), as its latest hello
-- announced it; NULL for an agent that has not announced one.
ALTER TABLE agents ADD COLUMN sealing_key TEXT NULL;

-- Hex of the target's postcard SealedEnv (the secrets of a run_script job sealed to this
-- agent), whose BLAKE3 is the grant's sealed_hash; NULL when the job has none for it.
ALTER TABLE job_targets ADD COLUMN sealed_hex TEXT NULL;
