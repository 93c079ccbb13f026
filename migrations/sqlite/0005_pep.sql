-- Personal eventing (XEP-0163): one pubsub service per account, nodes and their items.
CREATE TABLE pep_nodes (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    node TEXT NOT NULL,
    access_model TEXT NOT NULL,
    max_items INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (username, node)
);
CREATE TABLE pep_items (
    item_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    FOREIGN KEY (username, node) REFERENCES pep_nodes(username, node) ON DELETE CASCADE
);
CREATE UNIQUE INDEX pep_items_by_id ON pep_items(username, node, item_id);
CREATE INDEX pep_items_by_node ON pep_items(username, node, item_seq);
