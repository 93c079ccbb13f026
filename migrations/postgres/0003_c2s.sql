-- Rosters and offline messages for client sessions.
CREATE TABLE roster_items (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL DEFAULT 'none',
    ask_out BOOLEAN NOT NULL DEFAULT FALSE,
    ask_in BOOLEAN NOT NULL DEFAULT FALSE,
    groups TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (username, contact)
);

CREATE TABLE roster_versions (
    username TEXT PRIMARY KEY NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    version BIGINT NOT NULL
);

CREATE TABLE offline_messages (
    offline_id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    stanza TEXT NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE INDEX offline_messages_by_user ON offline_messages(username, offline_id);
