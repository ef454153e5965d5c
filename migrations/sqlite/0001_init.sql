-- StreamCore control plane, SQLite schema.
-- Conventions: ids are UUID v4 text; times are INTEGER milliseconds since the Unix
-- epoch; booleans are INTEGER 0/1; secrets are stored only as SHA-256 hex.
-- The store connects with `PRAGMA foreign_keys = ON`, so the ON DELETE clauses apply.
-- `*_lc` columns hold the Rust-lower-cased text used by the case-insensitive library
-- search (SQLite's own lower() folds ASCII only).

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,  -- lower-cased by the caller
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,             -- phone | browser | other
    cap_mic    INTEGER NOT NULL DEFAULT 0 CHECK (cap_mic IN (0, 1)),
    cap_camera INTEGER NOT NULL DEFAULT 0 CHECK (cap_camera IN (0, 1)),
    cap_screen INTEGER NOT NULL DEFAULT 0 CHECK (cap_screen IN (0, 1)),
    created_at INTEGER NOT NULL,
    last_seen  INTEGER,
    -- target of library_tracks' (device_id, user_id) foreign key
    UNIQUE (id, user_id)
) STRICT;
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE refresh_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id  TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    -- device-scoped credential; deleting the device deletes its tokens
    device_id  TEXT    REFERENCES devices (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens (device_id);

CREATE TABLE password_resets (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX password_resets_user ON password_resets (user_id);

-- Newest first is `ORDER BY created_at DESC, rowid DESC`.
CREATE TABLE mail_outbox (
    id         TEXT    NOT NULL PRIMARY KEY,
    to_addr    TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    sent_at    INTEGER
) STRICT;
CREATE INDEX mail_outbox_created ON mail_outbox (created_at);

CREATE TABLE pairings (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- unique among all rows; the store reports a clash as Conflict("pairing code")
    code       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    claimed_at INTEGER,
    device_id  TEXT    REFERENCES devices (id) ON DELETE SET NULL
) STRICT;
CREATE INDEX pairings_user ON pairings (user_id);
CREATE INDEX pairings_device ON pairings (device_id);

CREATE TABLE rooms (
    id               TEXT    NOT NULL PRIMARY KEY,
    owner_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL UNIQUE,
    max_participants INTEGER NOT NULL,
    auto_record      INTEGER NOT NULL DEFAULT 0 CHECK (auto_record IN (0, 1)),
    publish_policy   TEXT    NOT NULL,       -- owner | anyone
    created_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX rooms_owner ON rooms (owner_id);

CREATE TABLE library_tracks (
    device_id   TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT    NOT NULL,
    artist      TEXT    NOT NULL,
    album       TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL,
    codec       TEXT    NOT NULL,
    size_bytes  INTEGER NOT NULL,
    title_lc    TEXT    NOT NULL,
    artist_lc   TEXT    NOT NULL,
    album_lc    TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, client_id),
    -- a track always belongs to its device's owner; deleting the device deletes its tracks
    FOREIGN KEY (device_id, user_id) REFERENCES devices (id, user_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX library_tracks_user ON library_tracks (user_id, artist_lc, album_lc, title_lc);
