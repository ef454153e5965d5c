-- Each device's states are numbered (`seq` in `now_playing.updated`), one more than
-- the last, in the transaction that stores them: the history orders and deduplicates
-- by it, whatever the clocks of the nodes that stamped them.
ALTER TABLE now_playing ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;

-- Listening history (control-api/src/history): each device's place in its stream of
-- `now.playing` states, and the plays those states made.
CREATE TABLE listening_cursors (
    device_id  TEXT   NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cursor     TEXT   NOT NULL,  -- history::Cursor as JSON
    version    BIGINT NOT NULL,  -- one more on every write: a stale writer changes nothing
    updated_at BIGINT NOT NULL
);
CREATE INDEX listening_cursors_user ON listening_cursors (user_id);

-- One play per row. The statistics read only (user_id, started_at, track_key,
-- listened_ms), from the narrow covering index below (an index-only scan once the
-- table is vacuumed), and group by the integer `track_key` (a hash of title, artist
-- and album); the text of a track is in `play_tracks`.
CREATE TABLE plays (
    id          TEXT   NOT NULL PRIMARY KEY,  -- the event that began the play
    user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at  BIGINT NOT NULL,
    device_id   TEXT   NOT NULL,              -- plays outlive a removed device
    track_key   BIGINT NOT NULL,
    track_id    TEXT   NOT NULL,
    title       TEXT   NOT NULL,
    artist      TEXT   NOT NULL,
    album       TEXT   NOT NULL,
    duration_ms BIGINT NOT NULL,
    listened_ms BIGINT NOT NULL
);
CREATE INDEX plays_user_time ON plays (user_id, started_at) INCLUDE (track_key, listened_ms);
-- A play is written twice (when it comes to count, and when it ends), and a rewritten
-- row's page is read from the table again until vacuum marks it all-visible: vacuum
-- this table sooner than the default (a fifth of it changed) would.
ALTER TABLE plays SET (autovacuum_vacuum_scale_factor = 0.02,
                       autovacuum_vacuum_insert_scale_factor = 0.02);
CREATE INDEX plays_user_recent ON plays (user_id, started_at DESC, id COLLATE "C" DESC);

-- Each track a user played once: what `track_key` stands for.
CREATE TABLE play_tracks (
    user_id   TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    track_key BIGINT NOT NULL,
    title     TEXT   NOT NULL,
    artist    TEXT   NOT NULL,
    album     TEXT   NOT NULL,
    track_id  TEXT   NOT NULL,  -- the first library id it was played under
    PRIMARY KEY (user_id, track_key)
);
