//! SCRAM-SHA-1 client side (RFC 5802) with GS2 flag `n` (no channel binding).

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::sync::Mutex;

type HmacSha1 = Hmac<Sha1>;

/// `SaltedPassword` cache keyed by (password, salt, iterations), as real clients keep it.
type SaltedCache = HashMap<(String, Vec<u8>, u32), [u8; 20]>;
static SALTED: Mutex<Option<SaltedCache>> = Mutex::new(None);

fn hmac(key: &[u8], data: &[u8]) -> Result<[u8; 20]> {
    let mut mac = HmacSha1::new_from_slice(key).map_err(|e| anyhow!("hmac key: {e}"))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 20] {
    let key = (password.to_string(), salt.to_vec(), iterations);
    if let Ok(guard) = SALTED.lock() {
        if let Some(v) = guard.as_ref().and_then(|m| m.get(&key)) {
            return *v;
        }
    }
    let mut out = [0u8; 20];
    pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut out);
    if let Ok(mut guard) = SALTED.lock() {
        guard.get_or_insert_with(HashMap::new).insert(key, out);
    }
    out
}

/// One client-side SCRAM-SHA-1 exchange.
pub struct ScramClient {
    password: String,
    first_bare: String,
    nonce: String,
    server_signature: Option<[u8; 20]>,
}

impl ScramClient {
    /// Starts an exchange for `username` (must not need escaping: bench names are plain).
    pub fn new(username: &str, password: &str) -> ScramClient {
        let nonce_bytes: [u8; 18] = rand::random();
        let nonce = B64.encode(nonce_bytes);
        ScramClient {
            password: password.to_string(),
            first_bare: format!("n={username},r={nonce}"),
            nonce,
            server_signature: None,
        }
    }

    /// The client-first message (`n,,` GS2 header).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// Answers the server-first message with the client-final message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>> {
        let text = std::str::from_utf8(server_first).context("server-first not UTF-8")?;
        let (mut r, mut s, mut i) = (None, None, None);
        for part in text.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                r = Some(v);
            } else if let Some(v) = part.strip_prefix("s=") {
                s = Some(v);
            } else if let Some(v) = part.strip_prefix("i=") {
                i = Some(v);
            }
        }
        let (Some(r), Some(s), Some(i)) = (r, s, i) else {
            bail!("malformed server-first: {text}");
        };
        if !r.starts_with(&self.nonce) {
            bail!("server nonce does not extend ours");
        }
        let salt = B64.decode(s).context("salt base64")?;
        let iterations: u32 = i.parse().context("iteration count")?;
        if iterations == 0 || iterations > 1_000_000 {
            bail!("bad iteration count {iterations}");
        }
        let salted = salted_password(&self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let client_key = hmac(&salted, b"Client Key")?;
        let stored_key: [u8; 20] = Sha1::digest(client_key).into();
        let client_sig = hmac(&stored_key, auth_message.as_bytes())?;
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(client_sig.iter()) {
            *p ^= s;
        }
        let server_key = hmac(&salted, b"Server Key")?;
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes())?);
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's `v=` signature from the success data.
    pub fn verify(&self, server_final: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(server_final).context("server-final not UTF-8")?;
        let v = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or_else(|| anyhow!("no server signature"))?;
        let got = B64.decode(v).context("signature base64")?;
        match self.server_signature {
            Some(expected) if expected.as_slice() == got.as_slice() => Ok(()),
            _ => bail!("server signature mismatch"),
        }
    }
}
