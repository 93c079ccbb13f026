-- Encrypted push (Tigase `tigase:push:encrypt:0`, used by the Snikket iOS app): the AES-128-GCM
-- key (base64) the device gave when it enabled push, or NULL for plain summaries.
ALTER TABLE push_registrations ADD COLUMN encrypt_key TEXT;
