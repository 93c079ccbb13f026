-- Message archive (XEP-0313) with stanza ids (XEP-0359).
CREATE TABLE archive (
    archive_id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    stanza_id TEXT NOT NULL,
    with_jid TEXT NOT NULL,
    stanza TEXT NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE INDEX archive_by_user ON archive(username, archive_id);
CREATE INDEX archive_by_user_with ON archive(username, with_jid, archive_id);
CREATE INDEX archive_by_time ON archive(stored_at);
CREATE UNIQUE INDEX archive_by_stanza_id ON archive(username, stanza_id);
