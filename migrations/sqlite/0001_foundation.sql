-- Accounts, credentials, roles, circles and invitations (foundation).
CREATE TABLE accounts (
    username TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL DEFAULT 'prosody:registered',
    state TEXT NOT NULL DEFAULT 'active',
    display_name TEXT,
    created_at INTEGER NOT NULL,
    deletion_requested_at INTEGER,
    last_active_at INTEGER,
    invite_id TEXT
);

CREATE TABLE credentials (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    mechanism TEXT NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (username, mechanism)
);

CREATE TABLE circles (
    circle_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE circle_members (
    circle_id TEXT NOT NULL REFERENCES circles(circle_id) ON DELETE CASCADE,
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (circle_id, username)
);
CREATE INDEX circle_members_by_user ON circle_members(username);

CREATE TABLE circle_chats (
    circle_id TEXT NOT NULL REFERENCES circles(circle_id) ON DELETE CASCADE,
    room_jid TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (circle_id, room_jid)
);

CREATE TABLE invites (
    invite_id TEXT PRIMARY KEY NOT NULL,
    token TEXT NOT NULL,
    kind TEXT NOT NULL,
    inviter TEXT,
    username TEXT,
    role TEXT NOT NULL,
    reusable INTEGER NOT NULL,
    note TEXT,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    use_count INTEGER NOT NULL DEFAULT 0,
    consumed_at INTEGER
);
CREATE INDEX invites_by_expiry ON invites(expires_at);

CREATE TABLE invite_circles (
    invite_id TEXT NOT NULL REFERENCES invites(invite_id) ON DELETE CASCADE,
    circle_id TEXT NOT NULL,
    PRIMARY KEY (invite_id, circle_id)
);
