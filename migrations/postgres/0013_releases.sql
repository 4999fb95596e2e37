-- Reap3r schema 0013 (agent releases: builds and their signed manifests), PostgreSQL dialect.
-- Kept identical to migrations/sqlite/0013_releases.sql but for the bytes type.

-- One agent build for one platform. The bytes are in the server's file store under their
-- BLAKE3; the manifest (postcard: version, platform, size, BLAKE3) is signed by the release
-- key, which is not the server's key: agents check that signature before they run the build.
CREATE TABLE agent_releases (
    id          TEXT PRIMARY KEY NOT NULL,
    version     TEXT NOT NULL,
    platform    TEXT NOT NULL,
    size        BIGINT NOT NULL,
    blake3      TEXT NOT NULL,
    manifest    BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (version, platform)
);
