-- Blocklists (XEP-0191) and private XML storage (XEP-0049).
CREATE TABLE blocklist (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    jid TEXT NOT NULL,
    PRIMARY KEY (username, jid)
);

CREATE TABLE private_storage (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ns TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (username, name, ns)
);
