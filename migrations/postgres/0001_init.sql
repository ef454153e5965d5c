-- StreamCore control plane, PostgreSQL schema.
-- Conventions: ids are UUID v4 text; times are BIGINT milliseconds since the Unix
-- epoch; secrets are stored only as SHA-256 hex.
-- `*_lc` columns hold the Rust-lower-cased text used by the case-insensitive library
-- search, so SQLite and PostgreSQL fold case identically; they and the sort keys use
-- COLLATE "C" so both backends order tracks the same way (byte order).

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL CONSTRAINT users_email_key UNIQUE,  -- lower-cased by the caller
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    BIGINT  NOT NULL
);

CREATE TABLE devices (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,             -- phone | browser | other
    cap_mic    BOOLEAN NOT NULL DEFAULT FALSE,
    cap_camera BOOLEAN NOT NULL DEFAULT FALSE,
    cap_screen BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT  NOT NULL,
    last_seen  BIGINT,
    -- target of library_tracks' (device_id, user_id) foreign key
    CONSTRAINT devices_id_user_key UNIQUE (id, user_id)
);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE refresh_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id  TEXT    NOT NULL,
    token_hash TEXT    NOT NULL CONSTRAINT refresh_tokens_token_hash_key UNIQUE,
    -- device-scoped credential; deleting the device deletes its tokens
    device_id  TEXT    REFERENCES devices (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens (device_id);

CREATE TABLE password_resets (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT
);
CREATE INDEX password_resets_user ON password_resets (user_id);

-- Newest first is `ORDER BY created_at DESC, seq DESC`.
CREATE TABLE mail_outbox (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY,
    id         TEXT    NOT NULL PRIMARY KEY,
    to_addr    TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX mail_outbox_created ON mail_outbox (created_at, seq);

CREATE TABLE pairings (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- unique among all rows; the store reports a clash as Conflict("pairing code")
    code       TEXT    NOT NULL CONSTRAINT pairings_code_key UNIQUE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    attempts   BIGINT  NOT NULL DEFAULT 0,
    claimed_at BIGINT,
    device_id  TEXT    REFERENCES devices (id) ON DELETE SET NULL
);
CREATE INDEX pairings_user ON pairings (user_id);
CREATE INDEX pairings_device ON pairings (device_id);

CREATE TABLE rooms (
    id               TEXT    NOT NULL PRIMARY KEY,
    owner_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL CONSTRAINT rooms_name_key UNIQUE,
    max_participants BIGINT  NOT NULL,
    auto_record      BOOLEAN NOT NULL DEFAULT FALSE,
    publish_policy   TEXT    NOT NULL,       -- owner | anyone
    created_at       BIGINT  NOT NULL
);
CREATE INDEX rooms_owner ON rooms (owner_id);

CREATE TABLE library_tracks (
    device_id   TEXT    NOT NULL,
    client_id   TEXT    NOT NULL COLLATE "C",
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT    NOT NULL COLLATE "C",
    artist      TEXT    NOT NULL COLLATE "C",
    album       TEXT    NOT NULL COLLATE "C",
    duration_ms BIGINT  NOT NULL,
    codec       TEXT    NOT NULL,
    size_bytes  BIGINT  NOT NULL,
    title_lc    TEXT    NOT NULL COLLATE "C",
    artist_lc   TEXT    NOT NULL COLLATE "C",
    album_lc    TEXT    NOT NULL COLLATE "C",
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (device_id, client_id),
    -- a track always belongs to its device's owner; deleting the device deletes its tracks
    FOREIGN KEY (device_id, user_id) REFERENCES devices (id, user_id) ON DELETE CASCADE
);
CREATE INDEX library_tracks_user ON library_tracks (user_id, artist_lc, album_lc, title_lc);
