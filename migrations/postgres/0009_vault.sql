-- Reap3r schema 0009 (the vault), PostgreSQL dialect.
-- Kept column-for-column identical to migrations/sqlite/0009_vault.sql.

-- The master keys (KEKs) this database has been sealed with: never the key itself, only its id
-- (a BLAKE3 derivation of it) and a known text sealed under it, so a node that starts with the
-- wrong key finds out before it reads or writes anything sealed. One row is the primary: what
-- new seals use. A rotation adds a primary and retires the old one once nothing uses it.
CREATE TABLE vault_master_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    check_sealed TEXT NOT NULL,
    is_primary   BIGINT NOT NULL CHECK (is_primary IN (0, 1)),
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT NULL
);

-- A secret's metadata. Its data key (DEK, AES-256-GCM) is sealed by the master key `kek_id`
-- with the AAD (org, secret); values live in vault_secret_versions. `strength` is the zxcvbn
-- score (0–4) of the current value of a password; `rotation_*` is the rotation policy.
CREATE TABLE vault_secrets (
    id               TEXT PRIMARY KEY NOT NULL,
    org_id           TEXT NOT NULL REFERENCES orgs (id),
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    folder_id        TEXT NULL REFERENCES folders (id) ON DELETE SET NULL,
    tags             TEXT NOT NULL,
    notes            TEXT NULL,
    expires_at       BIGINT NULL,
    current_version  BIGINT NOT NULL,
    dek_sealed       TEXT NOT NULL,
    kek_id           TEXT NOT NULL,
    strength         BIGINT NULL,
    rotation_days    BIGINT NULL,
    rotation_length  BIGINT NULL,
    rotation_classes TEXT NULL,
    next_rotation_at BIGINT NULL,
    last_rotated_at  BIGINT NULL,
    owner_id         TEXT NULL,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX vault_secrets_kek_id ON vault_secrets (kek_id);
CREATE INDEX vault_secrets_org_expires ON vault_secrets (org_id, expires_at);
CREATE INDEX vault_secrets_next_rotation ON vault_secrets (next_rotation_at);

-- Every value a secret has had: AES-256-GCM under the secret's DEK with the AAD
-- (org, secret, version). `value_mac` is a keyed BLAKE3 of the value under a key derived from
-- the DEK: it tells versions apart in the audit chain and cannot be brute-forced without it.
CREATE TABLE vault_secret_versions (
    secret_id  TEXT NOT NULL REFERENCES vault_secrets (id) ON DELETE CASCADE,
    version    BIGINT NOT NULL,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    ciphertext TEXT NOT NULL,
    value_mac  TEXT NOT NULL,
    size       BIGINT NOT NULL,
    strength   BIGINT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (secret_id, version)
);

-- Who else may do what with a secret: a user or a role of the secret's org.
CREATE TABLE vault_grants (
    id           TEXT PRIMARY KEY NOT NULL,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    secret_id    TEXT NOT NULL REFERENCES vault_secrets (id) ON DELETE CASCADE,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'role')),
    subject      TEXT NOT NULL,
    can_read     BIGINT NOT NULL CHECK (can_read IN (0, 1)),
    can_reveal   BIGINT NOT NULL CHECK (can_reveal IN (0, 1)),
    can_use      BIGINT NOT NULL CHECK (can_use IN (0, 1)),
    can_write    BIGINT NOT NULL CHECK (can_write IN (0, 1)),
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (secret_id, subject_kind, subject)
);

-- Who touched a secret, when, how and why. Kept when the secret is deleted (no foreign key).
CREATE TABLE vault_access_log (
    id        TEXT PRIMARY KEY NOT NULL,
    org_id    TEXT NOT NULL REFERENCES orgs (id),
    secret_id TEXT NOT NULL,
    version   BIGINT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    origin    TEXT NULL,
    reason    TEXT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX vault_access_log_secret ON vault_access_log (secret_id, at);
CREATE INDEX vault_access_log_org ON vault_access_log (org_id, at);

-- When the session's user last proved a second factor again (POST /api/auth/step-up).
ALTER TABLE auth_sessions ADD COLUMN step_up_at BIGINT NULL;
