-- Recordings: one row per recording of a room. The recorder moves it through
-- recording → stopped → uploaded (or failed); each move writes its recording.events
-- row in the same transaction, and only a real move does, so a step repeated after a
-- crash adds no event.
CREATE TABLE recordings (
    id          TEXT    NOT NULL PRIMARY KEY,
    room_name   TEXT    NOT NULL,
    owner_id    TEXT    NOT NULL,           -- the room's owner
    started_by  TEXT    NOT NULL,           -- user id, join-token identity, or "auto"
    node_id     TEXT    NOT NULL,           -- the node whose spool holds it
    status      TEXT    NOT NULL,           -- recording | stopped | uploaded | failed
    started_at  INTEGER NOT NULL,
    stopped_at  INTEGER,
    uploaded_at INTEGER,
    stop_reason TEXT,
    failure     TEXT,
    last_error  TEXT,                       -- the last failed upload attempt, if any
    manifest    TEXT,                       -- JSON, the recorder's manifest
    objects     TEXT                        -- JSON array of object keys, once uploaded
) STRICT;
CREATE INDEX recordings_room ON recordings (room_name, started_at);
CREATE UNIQUE INDEX recordings_one_active ON recordings (room_name) WHERE status = 'recording';
