-- Tigase push extensions (used by the Snikket iOS app): the AES-128-GCM key (base64) the device
-- gave when it enabled push (`tigase:push:encrypt:0`), or NULL for plain summaries; and its
-- filters (`tigase:push:filter:*`: muted senders, group chat rules, unknown senders), as the XML
-- the device sent, or '' for none.
ALTER TABLE push_registrations ADD COLUMN encrypt_key TEXT;
ALTER TABLE push_registrations ADD COLUMN filters TEXT NOT NULL DEFAULT '';
