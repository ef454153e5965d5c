-- When the user's sessions were last ended (password change or reset, an admin): an
-- access token issued before it no longer opens a socket (it verifies on its own
-- for the rest of its short life, so this is checked where a socket opens).
ALTER TABLE users ADD COLUMN sessions_ended_at INTEGER;
