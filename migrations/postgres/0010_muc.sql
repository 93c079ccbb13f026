-- Group chats people create on groups.DOMAIN (XEP-0045). Circle chats are not here: they are
-- rows of circle_chats, with the circle's members as their members.
CREATE TABLE muc_rooms (
    room_jid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- Booleans as 0/1: kept when empty, listed in disco, affiliation needed to join, real JIDs
    -- shown to everyone, members may invite, participants may change the subject.
    persistent BIGINT NOT NULL,
    public BIGINT NOT NULL,
    members_only BIGINT NOT NULL,
    non_anonymous BIGINT NOT NULL,
    allow_invites BIGINT NOT NULL,
    change_subject BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- owner, admin, member or outcast; no row means none.
CREATE TABLE muc_affiliations (
    room_jid TEXT NOT NULL REFERENCES muc_rooms(room_jid) ON DELETE CASCADE,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (room_jid, jid)
);
CREATE INDEX muc_affiliations_by_jid ON muc_affiliations (jid);
