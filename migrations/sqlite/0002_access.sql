-- Reap3r schema 0002 (auth sessions, MFA, MSSP, API keys, groups), SQLite dialect.
-- Kept column-for-column identical to migrations/postgres/0002_access.sql.

-- Accounts: profile, TOTP MFA and change stamps.
ALTER TABLE users ADD COLUMN display_name TEXT NULL;
-- Base32 TOTP secret, stored while setup is pending (mfa_enabled = 0) and once enabled.
ALTER TABLE users ADD COLUMN mfa_secret TEXT NULL;
ALTER TABLE users ADD COLUMN mfa_enabled BIGINT NOT NULL DEFAULT 0 CHECK (mfa_enabled IN (0, 1));
-- The last TOTP time step accepted; a code is only accepted for a later step (one-time use).
ALTER TABLE users ADD COLUMN mfa_last_step BIGINT NULL;
ALTER TABLE users ADD COLUMN updated_at BIGINT NULL;

-- MSSP: a customer organisation names the provider organisation that manages it.
ALTER TABLE orgs ADD COLUMN parent_org_id TEXT NULL REFERENCES orgs (id);
CREATE INDEX orgs_parent_org_id ON orgs (parent_org_id);

-- MSSP assignments: a (provider) user's role in another organisation.
CREATE TABLE user_org_roles (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, org_id)
);
CREATE INDEX user_org_roles_org_id ON user_org_roles (org_id);

-- Login sessions. Only hashes of the access and refresh secrets are stored.
CREATE TABLE auth_sessions (
    id                 TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id             TEXT NOT NULL REFERENCES orgs (id),
    access_hash        TEXT NOT NULL UNIQUE,
    access_expires_at  BIGINT NOT NULL,
    refresh_expires_at BIGINT NOT NULL,
    source_ip          TEXT NULL,
    user_agent         TEXT NULL,
    created_at         BIGINT NOT NULL,
    last_used_at       BIGINT NOT NULL,
    revoked_at         BIGINT NULL,
    revoked_reason     TEXT NULL
);
CREATE INDEX auth_sessions_user_id ON auth_sessions (user_id);

-- Every refresh token a session was given; a used one presented again means theft.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    used_at    BIGINT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Second step of a login with MFA: password accepted, TOTP code still owed.
CREATE TABLE mfa_challenges (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source_ip  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    used_at    BIGINT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX mfa_challenges_user_id ON mfa_challenges (user_id);

-- Every login attempt, for lockout and review. No foreign keys, like audit_log: the record must
-- outlive the rows it talks about (and unknown emails have no user or organisation).
CREATE TABLE login_events (
    id        TEXT PRIMARY KEY NOT NULL,
    ts        BIGINT NOT NULL,
    org_id    TEXT NULL,
    user_id   TEXT NULL,
    email     TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    success   BIGINT NOT NULL CHECK (success IN (0, 1)),
    outcome   TEXT NOT NULL,
    detail    TEXT NULL
);
CREATE INDEX login_events_email_ts ON login_events (email, ts);
CREATE INDEX login_events_source_ip_ts ON login_events (source_ip, ts);
CREATE INDEX login_events_org_ts ON login_events (org_id, ts);

-- API keys act as their user, limited to their scopes (a json array of permission names).
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL DEFAULT '[]',
    expires_at   BIGINT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NULL
);
CREATE INDEX api_keys_org_id ON api_keys (org_id);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

-- Groups of agents. The four tables share one shape; only folders nest (parent_id), and the
-- store keeps parent_id NULL in the others. Names are unique per organisation.
CREATE TABLE sites (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    description TEXT NULL,
    parent_id   TEXT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE companies (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    description TEXT NULL,
    parent_id   TEXT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE folders (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    description TEXT NULL,
    parent_id   TEXT NULL REFERENCES folders (id),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX folders_parent_id ON folders (parent_id);

CREATE TABLE tags (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    description TEXT NULL,
    parent_id   TEXT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE agent_tags (
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tag_id   TEXT NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    PRIMARY KEY (agent_id, tag_id)
);
CREATE INDEX agent_tags_tag_id ON agent_tags (tag_id);

-- Where an agent is filed. Deleting the group leaves the agent unfiled.
ALTER TABLE agents ADD COLUMN folder_id TEXT NULL REFERENCES folders (id) ON DELETE SET NULL;
ALTER TABLE agents ADD COLUMN site_id TEXT NULL REFERENCES sites (id) ON DELETE SET NULL;
ALTER TABLE agents ADD COLUMN company_id TEXT NULL REFERENCES companies (id) ON DELETE SET NULL;
CREATE INDEX agents_folder_id ON agents (folder_id);
CREATE INDEX agents_site_id ON agents (site_id);
CREATE INDEX agents_company_id ON agents (company_id);
-- Keyset pagination of an organisation's agents.
CREATE INDEX agents_org_enrolled ON agents (org_id, enrolled_at, id);
