-- Portal sessions of the admin gRPC API: only a SHA-256 hash of each token is stored.
CREATE TABLE portal_sessions (
    session_hash TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX portal_sessions_by_user ON portal_sessions(username);
CREATE INDEX portal_sessions_by_expiry ON portal_sessions(expires_at);
