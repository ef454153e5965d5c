-- Sign-up is mail first: `/auth/register` answers alike whether or not the address has
-- an account, and an account is made only from the link mailed to the address (where
-- its holder chooses the password). Each pending sign-up is one link: single-use,
-- expiring, stored as SHA-256 of its token. Once the account exists, every pending
-- sign-up of its address is deleted.
CREATE TABLE signups (
    token_hash   TEXT    NOT NULL PRIMARY KEY,
    email        TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX signups_email ON signups (email);
CREATE INDEX signups_expires ON signups (expires_at);
