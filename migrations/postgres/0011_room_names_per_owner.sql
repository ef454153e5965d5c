-- A room's name is unique among its owner's rooms, no longer across the node: a name
-- taken by someone else must not answer `409` (that told strangers which rooms
-- exist). The SFU knows a room by its id from now on; a recording's `room_name`
-- keeps the SFU room it recorded (the name before this migration, the id after).
ALTER TABLE rooms DROP CONSTRAINT rooms_name_key;
ALTER TABLE rooms ADD CONSTRAINT rooms_owner_name_key UNIQUE (owner_id, name);
-- The new constraint's index leads with owner_id.
DROP INDEX IF EXISTS rooms_owner;
