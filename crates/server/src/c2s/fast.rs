//! FAST (XEP-0484) token mechanisms and the Bind 2 (XEP-0386) resource name.
//!
//! `HT-SHA-256-*` (draft-schmaus-kitten-sasl-ht): the client sends `username NUL
//! HMAC-SHA-256(token, "Initiator" || cb-data)` and the server answers with
//! `HMAC-SHA-256(token, "Responder" || cb-data)`. Tokens are longer than the HMAC block (64
//! bytes), so HMAC keys them by their SHA-256 (RFC 2104 §2): the store keeps only that hash and
//! it is all verification needs. The hash is still key-equivalent for this mechanism; it keeps
//! the token string itself out of the database and its backups.

use hmac::Mac;
use sha2::{Digest, Sha256};
use snikket_xmpp::scram::{ChannelBinding, ChannelBindingType};
use subtle::ConstantTimeEq;

/// `urn:xmpp:fast:0`.
pub const NS_FAST: &str = "urn:xmpp:fast:0";
/// How long a token works (Prosody's default for Snikket: 21 days).
pub const TOKEN_TTL_SECS: i64 = 21 * 24 * 3600;
/// Random bytes in a token: 60 bytes are 80 base64url characters, beyond the HMAC block size.
const TOKEN_BYTES: usize = 60;

/// One `HT-SHA-256-*` mechanism: which channel binding data goes into the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HtMechanism {
    /// `HT-SHA-256-NONE`: no channel binding.
    None,
    /// `HT-SHA-256-EXPR`: `tls-exporter`.
    Exporter,
    /// `HT-SHA-256-ENDP`: `tls-server-end-point`.
    EndPoint,
}

impl HtMechanism {
    /// The mechanism's name.
    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::None => "HT-SHA-256-NONE",
            HtMechanism::Exporter => "HT-SHA-256-EXPR",
            HtMechanism::EndPoint => "HT-SHA-256-ENDP",
        }
    }

    /// Parses a mechanism name.
    pub fn from_name(name: &str) -> Option<HtMechanism> {
        [
            HtMechanism::None,
            HtMechanism::Exporter,
            HtMechanism::EndPoint,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    fn binding(self) -> Option<ChannelBindingType> {
        match self {
            HtMechanism::None => None,
            HtMechanism::Exporter => Some(ChannelBindingType::TlsExporter),
            HtMechanism::EndPoint => Some(ChannelBindingType::TlsServerEndPoint),
        }
    }

    /// The mechanisms this connection supports, `NONE` first.
    pub fn available(cb: &[ChannelBinding]) -> Vec<HtMechanism> {
        [
            HtMechanism::None,
            HtMechanism::Exporter,
            HtMechanism::EndPoint,
        ]
        .into_iter()
        .filter(|m| m.cb_data(cb).is_some())
        .collect()
    }

    /// The channel binding data for this mechanism on this connection (`None` if unavailable).
    pub fn cb_data(self, cb: &[ChannelBinding]) -> Option<Vec<u8>> {
        match self.binding() {
            None => Some(Vec::new()),
            Some(kind) => cb.iter().find(|c| c.kind == kind).map(|c| c.data.clone()),
        }
    }
}

/// A fresh token (the string the client gets) and the SHA-256 the store keeps.
pub fn new_token() -> (String, Vec<u8>) {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let hash = token_hash(&token);
    (token, hash)
}

/// What the store keeps for a token: its SHA-256 masked with a key derived from the server's
/// FAST key, the account and the client. The SHA-256 is as good as the token for an HMAC proof
/// (a key longer than a block is hashed first), so a copy of the database alone must not yield
/// it; the mask depends only on (account, client), so stored values still compare equal.
/// Applying it twice gives the hash back.
pub fn seal(key: &[u8], username: &str, client_id: &str, hash: &[u8]) -> Vec<u8> {
    let mask = hmac(
        key,
        b"fast-token-at-rest\0",
        format!("{username}\0{client_id}").as_bytes(),
    );
    hash.iter()
        .zip(mask.iter().cycle())
        .map(|(h, m)| h ^ m)
        .collect()
}

/// SHA-256 of a token string.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn hmac(key: &[u8], label: &[u8], cb_data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; this cannot fail.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(label);
    mac.update(cb_data);
    mac.finalize().into_bytes().to_vec()
}

/// The client's proof for a token, keyed by the token's SHA-256 (equal to keying by the token).
pub fn initiator(hash: &[u8], cb_data: &[u8]) -> Vec<u8> {
    hmac(hash, b"Initiator", cb_data)
}

/// The server's answer (`<additional-data>` of the success).
pub fn responder(hash: &[u8], cb_data: &[u8]) -> Vec<u8> {
    hmac(hash, b"Responder", cb_data)
}

/// Splits an HT initial response into the username and the client's proof.
pub fn parse_initial(initial: &[u8]) -> Option<(String, Vec<u8>)> {
    let nul = initial.iter().position(|b| *b == 0)?;
    let user = std::str::from_utf8(&initial[..nul]).ok()?.to_string();
    let proof = initial[nul + 1..].to_vec();
    (!user.is_empty() && proof.len() == 32).then_some((user, proof))
}

/// Whether `proof` is the client proof for the token with this hash (constant time).
pub fn verify(hash: &[u8], cb_data: &[u8], proof: &[u8]) -> bool {
    bool::from(initiator(hash, cb_data).ct_eq(proof))
}

/// Longest tag kept in a Bind 2 resource.
const MAX_TAG_CHARS: usize = 32;

/// The Bind 2 resource: the client's `<tag>` (cleaned up), a dot and a short id stable for one
/// client of one account, so a reconnecting client gets its resource back (and replaces its
/// stale session). Without a client id the id is random.
pub fn bind2_resource(tag: Option<&str>, username: &str, client_id: Option<&str>) -> String {
    let id = match client_id {
        Some(c) => {
            let h = Sha256::digest(format!("bind2\0{username}\0{c}").as_bytes());
            h.iter().take(4).map(|x| format!("{x:02x}")).collect()
        }
        None => {
            use rand::RngCore;
            let mut b = [0u8; 4];
            rand::rngs::OsRng.fill_bytes(&mut b);
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        }
    };
    let tag: String = tag
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' ' | '.'))
        .take(MAX_TAG_CHARS)
        .collect::<String>()
        .trim()
        .to_string();
    if tag.is_empty() {
        id
    } else {
        format!("{tag}.{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_hides_the_hash_and_is_undone_by_sealing_again() {
        let (_, hash) = new_token();
        let sealed = seal(b"key", "alice", "phone", &hash);
        assert_ne!(sealed, hash);
        assert_eq!(sealed.len(), hash.len());
        assert_eq!(seal(b"key", "alice", "phone", &sealed), hash);
        assert_eq!(
            seal(b"key", "alice", "phone", &hash),
            sealed,
            "stable per client"
        );
        assert_ne!(seal(b"key", "alice", "laptop", &hash), sealed);
        assert_ne!(seal(b"key", "bob", "phone", &hash), sealed);
        assert_ne!(seal(b"other key", "alice", "phone", &hash), sealed);
    }

    #[test]
    fn ht_proofs_keyed_by_the_hash_equal_those_keyed_by_the_token() {
        let (token, hash) = new_token();
        assert!(
            token.len() > 64,
            "the trick needs tokens beyond the block size"
        );
        let cb = b"channel binding";
        let by_token = hmac(token.as_bytes(), b"Initiator", cb);
        assert_eq!(initiator(&hash, cb), by_token);
        assert!(verify(&hash, cb, &by_token));
        assert!(!verify(&hash, b"other binding", &by_token));
        assert_eq!(
            responder(&hash, b""),
            hmac(token.as_bytes(), b"Responder", b"")
        );
        assert_ne!(responder(&hash, b""), initiator(&hash, b""));
        let (other, other_hash) = new_token();
        assert_ne!(other, token);
        assert!(!verify(&other_hash, cb, &by_token));
    }

    #[test]
    fn ht_initial_response_is_username_nul_proof() {
        let proof = [7u8; 32];
        let mut msg = b"alice\0".to_vec();
        msg.extend_from_slice(&proof);
        assert_eq!(
            parse_initial(&msg),
            Some(("alice".to_string(), proof.to_vec()))
        );
        assert_eq!(parse_initial(b"alice"), None);
        assert_eq!(parse_initial(b"\0aaaa"), None);
        assert_eq!(parse_initial(b"alice\0short"), None);
    }

    #[test]
    fn mechanisms_follow_the_channel_bindings() {
        assert_eq!(HtMechanism::available(&[]), vec![HtMechanism::None]);
        let cb = [ChannelBinding::tls_exporter(vec![1; 32])];
        assert_eq!(
            HtMechanism::available(&cb),
            vec![HtMechanism::None, HtMechanism::Exporter]
        );
        assert_eq!(HtMechanism::Exporter.cb_data(&cb), Some(vec![1; 32]));
        assert_eq!(
            HtMechanism::from_name("HT-SHA-256-NONE"),
            Some(HtMechanism::None)
        );
        assert_eq!(HtMechanism::from_name("HT-SHA-1-NONE"), None);
    }

    #[test]
    fn bind2_resources_are_stable_per_client_and_account() {
        let a = bind2_resource(Some("Conversations"), "alice", Some("uuid-1"));
        assert!(a.starts_with("Conversations."), "{a}");
        assert_eq!(a.len(), "Conversations.".len() + 8);
        assert_eq!(
            a,
            bind2_resource(Some("Conversations"), "alice", Some("uuid-1"))
        );
        assert_ne!(
            a,
            bind2_resource(Some("Conversations"), "alice", Some("uuid-2"))
        );
        assert_ne!(
            a,
            bind2_resource(Some("Conversations"), "bob", Some("uuid-1"))
        );
        // Odd characters are dropped, long tags cut, no tag leaves just the id.
        let odd = bind2_resource(Some("<Evil/>\u{0}App"), "alice", Some("uuid-1"));
        assert!(odd.starts_with("EvilApp."), "{odd}");
        let long = "x".repeat(100);
        assert!(bind2_resource(Some(&long), "alice", None).len() <= MAX_TAG_CHARS + 9);
        assert_eq!(bind2_resource(None, "alice", Some("uuid-1")).len(), 8);
        assert_ne!(
            bind2_resource(None, "alice", None),
            bind2_resource(None, "alice", None)
        );
    }
}
