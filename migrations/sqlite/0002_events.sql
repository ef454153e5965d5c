-- Events: the transactional outbox, the relay's lease, device presence and the
-- last playback state of each device.

-- Written in the same transaction as the state change it reports; the relay publishes
-- rows in `seq` order and then sets `published_at`. `payload` is the envelope JSON.
CREATE TABLE event_outbox (
    seq          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,    -- the envelope's id
    topic        TEXT    NOT NULL,
    key          TEXT    NOT NULL,           -- ordering key: device, user or room
    payload      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
) STRICT;
CREATE INDEX event_outbox_unpublished ON event_outbox (seq) WHERE published_at IS NULL;
CREATE INDEX event_outbox_published ON event_outbox (published_at) WHERE published_at IS NOT NULL;

-- One relay at a time publishes (nodes sharing a database take turns by lease).
CREATE TABLE leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- Presence: `online` flips with heartbeats and the device socket, and every flip
-- writes a device.status event. `control_conn` names the live device socket that
-- remote-control commands go to.
ALTER TABLE devices ADD COLUMN online INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1));
ALTER TABLE devices ADD COLUMN control_conn TEXT;

CREATE TABLE now_playing (
    device_id  TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT    NOT NULL,             -- JSON, as the device reported it
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX now_playing_user ON now_playing (user_id);
