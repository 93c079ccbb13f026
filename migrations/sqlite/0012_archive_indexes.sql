-- Fewer index pages changed per archived message (every message's path waits for its commit).
--
-- The archive is expired oldest first by id (archive ids grow with time), which needs no index on
-- the time: that index cost every message a write.
DROP INDEX archive_by_time;
-- Stanza ids begin with the time they were made, so an index on the id alone grows at its end,
-- where all new rows share a page. Led by the owner, it had a page per user that each new row
-- changed on its own. Lookups name the owner and the id, and the ids are unique by themselves.
DROP INDEX archive_by_stanza_id;
CREATE INDEX archive_by_stanza_id ON archive(stanza_id);
