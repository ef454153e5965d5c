-- The relay between nodes: where a node's QUIC relay listens (`ip:port`), so the other
-- nodes can import its rooms. Empty: the node runs no relay.
ALTER TABLE nodes ADD COLUMN relay_addr TEXT NOT NULL DEFAULT '';
