-- File sharing (XEP-0363): one row per upload slot handed out on share.DOMAIN. The file itself is
-- `<data>/server/uploads/<slot>`. Rows outlive accounts (like Snikket's): they go when they expire.
CREATE TABLE uploads (
    slot TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    filename TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    -- SHA-256 (hex) of the secret the PUT must carry; the secret itself is never stored.
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Set once the whole file is on disk; until then the slot can still be uploaded to.
    completed_at BIGINT
);
-- The daily quota sums one user's slots of the last 24 hours.
CREATE INDEX uploads_by_user ON uploads (username, created_at);
-- Expiry walks the oldest slots.
CREATE INDEX uploads_by_age ON uploads (created_at);
