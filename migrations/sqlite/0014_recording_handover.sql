-- A drained node hands its recordings over to the node its rooms move to: the new
-- recording names the one it continues, and the two record at once for a moment (no
-- gap), so a room has at most one active recording per node.
ALTER TABLE recordings ADD COLUMN continues TEXT;
DROP INDEX recordings_one_active;
CREATE UNIQUE INDEX recordings_one_active ON recordings (room_name, node_id) WHERE status = 'recording';
-- Each node looks for the recordings handed over to it four times a second.
CREATE INDEX recordings_handed_over ON recordings (node_id) WHERE status = 'recording' AND continues IS NOT NULL;
