//! TURN REST API credentials (draft-uberti-behave-turn-rest) and stateless nonces.
//!
//! The username is a Unix expiry time, optionally followed by `:user`; the password is
//! `base64(HMAC-SHA1(secret, username))`. The XMPP server mints them (spec 3.7) with the same
//! shared secret, so no user database is needed here.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::Sha256;
use snikket_runtime::Secret;

/// How long a nonce stays valid before the client gets 438 (Stale Nonce).
pub const NONCE_LIFETIME_SECS: u64 = 600;

/// Why credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The username does not start with a Unix timestamp.
    #[error("username is not a turn rest username")]
    Malformed,
    /// The timestamp is in the past.
    #[error("credentials expired")]
    Expired,
}

/// Nonce check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Ours and fresh.
    Valid,
    /// Ours but too old, or not ours: the client must retry with a new one.
    Stale,
}

/// Credential and nonce authority for one realm.
pub struct Auth {
    secret: Secret<String>,
    realm: String,
    nonce_key: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("invariant: hmac takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Auth {
    /// An authority for `realm` using the shared `secret`.
    pub fn new(secret: Secret<String>, realm: String) -> Auth {
        let mut nonce_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce_key);
        Auth {
            secret,
            realm,
            nonce_key,
        }
    }

    /// The realm (the domain in ASCII form).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The password the XMPP server hands out for `username`.
    pub fn password(&self, username: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(hmac_sha1(
            self.secret.expose().as_bytes(),
            username.as_bytes(),
        ))
    }

    /// Checks the expiry embedded in `username` against `now` (Unix seconds).
    pub fn check_username(username: &str, now: u64) -> Result<(), CredentialError> {
        let ts = username.split(':').next().unwrap_or("");
        let expiry: u64 = ts.parse().map_err(|_| CredentialError::Malformed)?;
        if expiry <= now {
            return Err(CredentialError::Expired);
        }
        Ok(())
    }

    /// The long-term credential key for `username` in this realm.
    pub fn key(&self, username: &str) -> [u8; 16] {
        crate::stun::long_term_key(username, &self.realm, &self.password(username))
    }

    fn nonce_mac(&self, issued: u64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.nonce_key)
            .expect("invariant: hmac takes any key");
        mac.update(&issued.to_be_bytes());
        let out = mac.finalize().into_bytes();
        out[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A fresh nonce: issue time and a MAC over it, so no state is kept per client.
    pub fn nonce(&self, now: u64) -> String {
        format!("{now:016x}{}", self.nonce_mac(now))
    }

    /// Whether `nonce` was issued by us less than [`NONCE_LIFETIME_SECS`] ago.
    pub fn check_nonce(&self, nonce: &str, now: u64) -> NonceState {
        use subtle::ConstantTimeEq;
        let (Some(ts), Some(mac)) = (nonce.get(..16), nonce.get(16..)) else {
            return NonceState::Stale;
        };
        let Ok(issued) = u64::from_str_radix(ts, 16) else {
            return NonceState::Stale;
        };
        let want = self.nonce_mac(issued);
        let genuine = mac.len() == want.len() && bool::from(mac.as_bytes().ct_eq(want.as_bytes()));
        if genuine && issued <= now && now - issued < NONCE_LIFETIME_SECS {
            NonceState::Valid
        } else {
            NonceState::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_the_documented_formula() {
        // Same value as `echo -n 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let a = Auth::new(Secret::new("secret".into()), "example.com".into());
        let want = base64::engine::general_purpose::STANDARD
            .encode(hmac_sha1(b"secret", b"1700000000:alice"));
        assert_eq!(a.password("1700000000:alice"), want);
        assert_eq!(a.password("1700000000:alice").len(), 28);
    }

    #[test]
    fn username_expiry() {
        assert_eq!(Auth::check_username("2000:bob", 1999), Ok(()));
        assert_eq!(Auth::check_username("2000", 1999), Ok(()));
        assert_eq!(
            Auth::check_username("2000", 2000),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            Auth::check_username("bob", 1),
            Err(CredentialError::Malformed)
        );
        assert_eq!(Auth::check_username("", 1), Err(CredentialError::Malformed));
        assert_eq!(
            Auth::check_username("-5:x", 1),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let a = Auth::new(Secret::new("s".into()), "r".into());
        let n = a.nonce(1000);
        assert_eq!(a.check_nonce(&n, 1000), NonceState::Valid);
        assert_eq!(
            a.check_nonce(&n, 1000 + NONCE_LIFETIME_SECS - 1),
            NonceState::Valid
        );
        assert_eq!(
            a.check_nonce(&n, 1000 + NONCE_LIFETIME_SECS),
            NonceState::Stale
        );
        let forged = format!("{:016x}{}", 5000u64, &n[16..]);
        assert_eq!(a.check_nonce(&forged, 5000), NonceState::Stale);
        assert_eq!(a.check_nonce("short", 1000), NonceState::Stale);
        assert_eq!(a.check_nonce("ééééééééééééééééé", 1000), NonceState::Stale);
        let other = Auth::new(Secret::new("s".into()), "r".into());
        assert_eq!(other.check_nonce(&n, 1000), NonceState::Stale);
    }
}
