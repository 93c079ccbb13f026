-- Push registrations (XEP-0357): where an account's clients asked to be woken up. Kept across
-- sessions; at most a few per account (the oldest go first).
CREATE TABLE push_registrations (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    -- The client's publish-options form, serialized (may be empty).
    options TEXT NOT NULL,
    -- The resource (client id) of the session that enabled it.
    client_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (username, service, node)
);
