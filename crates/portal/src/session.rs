//! Signed cookies: the login session and the CSRF token, HMAC-SHA256 over the value.
//!
//! A cookie value is `base64url(json) "." base64url(mac)`. Nothing here is encrypted: the
//! session cookie holds the server's session token, which only its owner sees (HttpOnly).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use rand::RngCore;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Name of the login session cookie.
pub const SESSION_COOKIE: &str = "snikket_session";
/// Name of the CSRF cookie (double submit: the form field must equal it).
pub const CSRF_COOKIE: &str = "snikket_csrf";
/// Lifetime of a portal session, as the server's.
pub const SESSION_SECONDS: i64 = 24 * 3600;

/// What the session cookie carries.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The server's session token (sent as `x-snikket-session`).
    pub token: String,
    /// Canonical localpart.
    pub username: String,
    /// Bare JID.
    pub jid: String,
    /// Role at login (the server checks it again on every call).
    pub admin: bool,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.username)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// Signs and checks cookie values with one key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    /// Uses `key` (any length) as the HMAC key.
    pub fn new(key: &[u8]) -> Self {
        Signer { key: key.to_vec() }
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// `value` serialised and signed for the cookie `purpose`.
    pub fn sign<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let json = serde_json::to_vec(value).unwrap_or_default();
        let mac = self.mac(purpose, &json);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The value of a cookie signed for `purpose`, or `None` if it was tampered with.
    pub fn verify<T: DeserializeOwned>(&self, purpose: &str, cookie: &str) -> Option<T> {
        let (data, mac) = cookie.split_once('.')?;
        let json = URL_SAFE_NO_PAD.decode(data).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.mac(purpose, &json);
        if expected.is_empty() || !bool::from(expected.ct_eq(&mac)) {
            return None;
        }
        serde_json::from_slice(&json).ok()
    }
}

/// A fresh random CSRF token.
pub fn new_csrf_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` in the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: Secure, HttpOnly, SameSite=Lax, path `/`.
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax")
}

/// Constant-time comparison of two CSRF tokens; empty never matches.
pub fn csrf_matches(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_round_trip_and_tampering_is_refused() {
        let s = Signer::new(b"key");
        let c = s.sign("csrf", &"abc".to_string());
        assert_eq!(s.verify::<String>("csrf", &c).as_deref(), Some("abc"));
        assert!(s.verify::<String>("session", &c).is_none());
        assert!(Signer::new(b"other").verify::<String>("csrf", &c).is_none());
        let (data, mac) = c.split_once('.').unwrap_or_default();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(b"\"abd\""));
        assert_ne!(data, URL_SAFE_NO_PAD.encode(b"\"abd\""));
        assert!(s.verify::<String>("csrf", &forged).is_none());
    }

    #[test]
    fn csrf_compare() {
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("", ""));
    }
}
