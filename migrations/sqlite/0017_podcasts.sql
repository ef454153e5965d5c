-- Podcasts: a user's shows, their episodes, and the chapter markers a host sets while
-- a room is recorded. An episode holds its own copy of its audio (under the show's
-- prefix in the object store), so deleting the recording or upload it came from
-- leaves a published episode playable. `guid` is made once and never changes: podcast
-- apps know an episode by it across edits.
CREATE TABLE shows (
    id            TEXT    NOT NULL PRIMARY KEY,
    owner_id      TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    author        TEXT    NOT NULL,
    language      TEXT    NOT NULL,
    category      TEXT    NOT NULL,
    explicit      INTEGER NOT NULL,
    artwork_key   TEXT,                     -- object key, once uploaded
    artwork_type  TEXT,                     -- image/jpeg or image/png
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX shows_owner ON shows (owner_id, created_at);

CREATE TABLE episodes (
    id           TEXT    NOT NULL PRIMARY KEY,
    show_id      TEXT    NOT NULL REFERENCES shows (id) ON DELETE CASCADE,
    guid         TEXT    NOT NULL UNIQUE,
    title        TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    status       TEXT    NOT NULL,          -- draft | published (scheduled: publish_at ahead)
    publish_at   INTEGER,
    season       INTEGER,
    episode      INTEGER,
    source_job   TEXT    NOT NULL,          -- the upload or mixdown it was made from
    audio_key    TEXT    NOT NULL,
    audio_bytes  INTEGER NOT NULL,
    audio_type   TEXT    NOT NULL,
    duration_ms  INTEGER NOT NULL,
    chapters     TEXT    NOT NULL,          -- JSON [{start_ms, title}], ascending
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX episodes_show ON episodes (show_id, created_at);
-- The feed: a show's published episodes by publish time.
CREATE INDEX episodes_feed ON episodes (show_id, publish_at) WHERE status = 'published';

CREATE TABLE recording_markers (
    id            TEXT   NOT NULL PRIMARY KEY,
    recording_id  TEXT   NOT NULL,
    at_ms         INTEGER NOT NULL,          -- wall clock, as the recording's samples
    title         TEXT   NOT NULL,
    created_by    TEXT   NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX recording_markers_recording ON recording_markers (recording_id, at_ms);
