-- Listening history (control-api/src/history): each device's place in its stream of
-- `now.playing` states, and the plays those states made.
CREATE TABLE listening_cursors (
    device_id  TEXT   NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cursor     TEXT   NOT NULL,  -- history::Cursor as JSON
    updated_at BIGINT NOT NULL
);
CREATE INDEX listening_cursors_user ON listening_cursors (user_id);

CREATE TABLE plays (
    id          TEXT   NOT NULL PRIMARY KEY,  -- the event that started the play
    user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at  BIGINT NOT NULL,
    device_id   TEXT   NOT NULL,              -- plays outlive a removed device
    track_id    TEXT   NOT NULL,
    title       TEXT   NOT NULL,
    artist      TEXT   NOT NULL,
    album       TEXT   NOT NULL,
    duration_ms BIGINT NOT NULL,
    listened_ms BIGINT NOT NULL
);
-- Covers the statistics' columns, so a user's year of plays is read from the index
-- alone (an index-only scan once the table is vacuumed).
CREATE INDEX plays_user_time ON plays (user_id, started_at)
    INCLUDE (title, artist, album, track_id, listened_ms);
