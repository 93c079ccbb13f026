-- FAST tokens (XEP-0484): the SHA-256 of each token an account's client was given, with its
-- expiry. At most the current and the next token per (account, client) are kept.
CREATE TABLE fast_tokens (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (username, client_id, token_hash)
);
