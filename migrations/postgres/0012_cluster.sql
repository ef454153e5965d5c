-- The cluster: the media nodes sharing this database, and the node each live room is
-- placed on.

-- One row per media node, written by the node itself every second (its heartbeat).
-- A node whose heartbeat is older than three seconds is taken for dead; a node that
-- stops cleanly deletes its row. `media_addrs` and `turn_urls` are comma-separated lists.
CREATE TABLE nodes (
    id            TEXT    NOT NULL PRIMARY KEY,
    region        TEXT    NOT NULL,
    zone          TEXT    NOT NULL,
    public_url    TEXT    NOT NULL,
    media_addrs   TEXT    NOT NULL,
    turn_urls     TEXT    NOT NULL,          -- its embedded TURN server's URLs
    capacity      BIGINT  NOT NULL,          -- peers the node is sized for
    workers       BIGINT  NOT NULL,
    cpu_percent   DOUBLE PRECISION NOT NULL,          -- its busiest worker's share of a core
    peers         BIGINT  NOT NULL,
    forwarded_bps BIGINT  NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('active', 'draining')),
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL
);

-- Where a room lives: the node every participant of the room is sent to. A row whose
-- node is dead is taken over by the next placement.
CREATE TABLE room_homes (
    room_id   TEXT    NOT NULL PRIMARY KEY,  -- the SFU room (a control-plane room's id)
    node_id   TEXT    NOT NULL,
    placed_at BIGINT  NOT NULL
);
CREATE INDEX room_homes_node ON room_homes (node_id);
