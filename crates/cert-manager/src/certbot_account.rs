//! Adopting the ACME account certbot registered, so that an install switched over from Snikket's
//! certbot keeps its account (registration e-mail, rate-limit history) instead of registering a
//! new one.
//!
//! Certbot keeps accounts in `accounts/<server-host><server-path>/<id>/` with `regr.json` (the
//! account URL), `private_key.json` (a JWK) and `meta.json`; `<id>` is the MD5 of the public key
//! in PEM. The lineage's `renewal/<name>.conf` names the account it renews with.
//!
//! - A P-256 key (certbot `ES256`) is used as it is.
//! - An RSA key (certbot's default) cannot sign for instant-acme, which only does ES256. The
//!   account is therefore rolled over to a new P-256 key (RFC 8555 §7.3.5: one `keyChange`
//!   request, the outer JWS signed RS256 with the old key, the inner one ES256 with the new key)
//!   and certbot's files are rewritten for the new key: a new `<id>` directory with an EC JWK,
//!   which certbot signs with as ES256, and the renewal conf pointing at it. Certbot keeps working
//!   with the account should the install be switched back.

use crate::error::CertError;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// An account found in certbot's storage.
#[derive(Debug)]
pub struct CertbotAccount {
    /// `accounts/<server>/<id>`.
    pub dir: PathBuf,
    /// The account URL (`regr.json` `uri`).
    pub url: String,
    key: AccountKey,
}

#[derive(Debug)]
enum AccountKey {
    Rsa(Box<RsaParts>),
    /// PKCS#8 DER of a P-256 key.
    P256(Vec<u8>),
}

/// The JWK members of an RSA private key, big-endian bytes.
#[derive(Debug)]
struct RsaParts {
    n: Vec<u8>,
    e: Vec<u8>,
    d: Vec<u8>,
    p: Vec<u8>,
    q: Vec<u8>,
    dp: Vec<u8>,
    dq: Vec<u8>,
    qi: Vec<u8>,
}

/// An account ready for instant-acme: its URL and a P-256 key (PKCS#8 DER).
pub struct Adopted {
    /// The account URL.
    pub url: String,
    /// PKCS#8 DER.
    pub pkcs8: Vec<u8>,
}

fn err(path: &Path, reason: impl Into<String>) -> CertError {
    CertError::Account {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Certbot's directory for a server: `accounts/` + host[:port] + path of the directory URL.
pub fn server_dir(letsencrypt: &Path, directory_url: &str) -> Option<PathBuf> {
    let rest = directory_url
        .strip_prefix("https://")
        .or_else(|| directory_url.strip_prefix("http://"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    if rest.is_empty() || rest.split('/').any(|seg| seg == "..") {
        return None;
    }
    Some(letsencrypt.join("accounts").join(rest))
}

/// The account `renewal_conf` names (`account = <id>`), if any.
fn renewal_account(renewal_conf: &Path) -> Option<String> {
    let text = std::fs::read_to_string(renewal_conf).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == "account").then(|| v.trim().to_string())
    })
}

/// Finds certbot's account for `directory_url`: the one the renewal conf names, else the only
/// one there is. `Ok(None)` when there is none (or several and no hint).
pub fn find(
    letsencrypt: &Path,
    renewal_conf: &Path,
    directory_url: &str,
) -> Result<Option<CertbotAccount>, CertError> {
    let Some(server) = server_dir(letsencrypt, directory_url) else {
        return Ok(None);
    };
    let ids: Vec<String> = match std::fs::read_dir(&server) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("regr.json").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect(),
        Err(_) => return Ok(None),
    };
    let id = match renewal_account(renewal_conf) {
        Some(id) if ids.contains(&id) => id,
        _ if ids.len() == 1 => ids[0].clone(),
        _ => {
            if !ids.is_empty() {
                tracing::warn!(
                    dir = %server.display(),
                    accounts = ids.len(),
                    "several certbot accounts and none named by the renewal conf; registering a new one"
                );
            }
            return Ok(None);
        }
    };
    load(&server.join(id)).map(Some)
}

fn load(dir: &Path) -> Result<CertbotAccount, CertError> {
    let regr_path = dir.join("regr.json");
    let regr: Value = read_json(&regr_path)?;
    let url = regr
        .get("uri")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .ok_or_else(|| err(&regr_path, "no account uri"))?
        .to_string();
    let key_path = dir.join("private_key.json");
    let jwk: Value = read_json(&key_path)?;
    let member = |name: &str| -> Result<Vec<u8>, CertError> {
        let v = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| err(&key_path, format!("key member {name} missing")))?;
        URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|_| err(&key_path, format!("key member {name} is not base64url")))
    };
    let key = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => AccountKey::Rsa(Box::new(RsaParts {
            n: member("n")?,
            e: member("e")?,
            d: member("d")?,
            p: member("p")?,
            q: member("q")?,
            dp: member("dp")?,
            dq: member("dq")?,
            qi: member("qi")?,
        })),
        Some("EC") if jwk.get("crv").and_then(Value::as_str) == Some("P-256") => {
            let pkcs8 = p256_pkcs8(&member("d")?, &member("x")?, &member("y")?)
                .ok_or_else(|| err(&key_path, "malformed P-256 key"))?;
            EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &pkcs8,
                &SystemRandom::new(),
            )
            .map_err(|_| err(&key_path, "P-256 key rejected"))?;
            AccountKey::P256(pkcs8)
        }
        other => {
            return Err(err(
                &key_path,
                format!("unsupported key type {}", other.unwrap_or("(none)")),
            ))
        }
    };
    Ok(CertbotAccount {
        dir: dir.to_path_buf(),
        url,
        key,
    })
}

fn read_json(path: &Path) -> Result<Value, CertError> {
    let text = std::fs::read(path).map_err(|e| CertError::io("reading", path, e))?;
    serde_json::from_slice(&text).map_err(|e| err(path, e.to_string()))
}

// PKCS#8 (RFC 5208) around an RFC 5915 ECPrivateKey for P-256, the layout ring writes and reads.
const P256_PKCS8_HEAD: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
const P256_PKCS8_MID: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];
// SubjectPublicKeyInfo of a P-256 key, before the 65-byte point.
const P256_SPKI_HEAD: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn p256_pkcs8(d: &[u8], x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    if d.len() != 32 || x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut out = Vec::with_capacity(138);
    out.extend_from_slice(&P256_PKCS8_HEAD);
    out.extend_from_slice(d);
    out.extend_from_slice(&P256_PKCS8_MID);
    out.push(0x04);
    out.extend_from_slice(x);
    out.extend_from_slice(y);
    Some(out)
}

/// The private scalar of a PKCS#8 P-256 key in ring's layout.
fn p256_private_scalar(pkcs8: &[u8]) -> Option<&[u8]> {
    (pkcs8.len() == 138 && pkcs8.starts_with(&P256_PKCS8_HEAD)).then(|| &pkcs8[36..68])
}

/// The public JWK of a P-256 key pair (members in lexicographic order, as the thumbprint wants).
fn p256_jwk(pair: &EcdsaKeyPair) -> Value {
    let point = pair.public_key().as_ref();
    json!({
        "crv": "P-256",
        "kty": "EC",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    })
}

/// Certbot's account id for a P-256 key: MD5 of the SubjectPublicKeyInfo PEM.
fn certbot_id(pair: &EcdsaKeyPair) -> String {
    use md5::Digest;
    let mut spki = P256_SPKI_HEAD.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    let b64 = STANDARD.encode(&spki);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    let digest = md5::Md5::digest(pem.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

type Https = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

async fn send(
    client: &Https,
    method: http::Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), CertError> {
    let mut req = http::Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/jose+json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| CertError::Acme {
            detail: format!("bad request to {url}: {e}"),
            soft: false,
        })?;
    let transient = |detail: String| CertError::Acme { detail, soft: true };
    let rsp = tokio::time::timeout(std::time::Duration::from_secs(60), client.request(req))
        .await
        .map_err(|_| transient("timed out waiting for the ACME server".into()))?
        .map_err(|e| transient(format!("connection to the ACME server failed: {e}")))?;
    let (parts, body) = rsp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| transient(format!("reading the ACME server's answer: {e}")))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

fn nonce_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("replay-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
}

fn crypto_err(what: &str) -> CertError {
    CertError::Certificate(format!("account key rollover: {what}"))
}

/// Makes `account` usable with instant-acme: a P-256 key is returned as it is; an RSA key is
/// rolled over to a new P-256 key at the CA and certbot's files are rewritten for it.
pub async fn adopt(
    account: CertbotAccount,
    directory_url: &str,
    renewal_conf: &Path,
    ca_bundle: Option<&Path>,
) -> Result<Adopted, CertError> {
    let rsa = match account.key {
        AccountKey::P256(pkcs8) => {
            return Ok(Adopted {
                url: account.url,
                pkcs8,
            })
        }
        AccountKey::Rsa(parts) => parts,
    };
    let key_path = account.dir.join("private_key.json");
    let old = RsaKeyPair::from_components(&ring::rsa::KeyPairComponents {
        public_key: ring::rsa::PublicKeyComponents {
            n: rsa.n.as_slice(),
            e: rsa.e.as_slice(),
        },
        d: rsa.d.as_slice(),
        p: rsa.p.as_slice(),
        q: rsa.q.as_slice(),
        dP: rsa.dp.as_slice(),
        dQ: rsa.dq.as_slice(),
        qInv: rsa.qi.as_slice(),
    })
    .map_err(|e| err(&key_path, format!("RSA key rejected: {e}")))?;

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| crypto_err("generating a key"))?
        .as_ref()
        .to_vec();
    let new = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
        .map_err(|_| crypto_err("loading the new key"))?;

    let client: Https = Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(crate::acme::connector(ca_bundle)?);
    let (status, _, body) = send(&client, http::Method::GET, directory_url, None).await?;
    let directory: Value = serde_json::from_slice(&body).map_err(|_| CertError::Acme {
        detail: format!("the ACME directory answered {status} without a directory"),
        soft: status.is_server_error(),
    })?;
    let url_of = |name: &str| -> Result<String, CertError> {
        directory
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CertError::Acme {
                detail: format!("the ACME directory has no {name}"),
                soft: false,
            })
    };
    let key_change = url_of("keyChange")?;
    let new_nonce = url_of("newNonce")?;

    // Inner JWS: signed by the new key, names the account and its old key.
    let inner_protected = b64json(&json!({
        "alg": "ES256",
        "jwk": p256_jwk(&new),
        "url": key_change,
    }));
    let inner_payload = b64json(&json!({
        "account": account.url,
        "oldKey": {
            "e": URL_SAFE_NO_PAD.encode(&rsa.e),
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(&rsa.n),
        },
    }));
    let inner_sig = new
        .sign(
            &rng,
            format!("{inner_protected}.{inner_payload}").as_bytes(),
        )
        .map_err(|_| crypto_err("signing with the new key"))?;
    let inner = json!({
        "protected": inner_protected,
        "payload": inner_payload,
        "signature": URL_SAFE_NO_PAD.encode(inner_sig.as_ref()),
    });
    let outer_payload = b64json(&inner);

    let (_, headers, _) = send(&client, http::Method::HEAD, &new_nonce, None).await?;
    let mut nonce = nonce_of(&headers).ok_or_else(|| CertError::Acme {
        detail: "the ACME server sent no nonce".into(),
        soft: true,
    })?;
    let mut tries = 0;
    loop {
        tries += 1;
        // Outer JWS: an ordinary request of the account, signed by the old (RSA) key.
        let protected = b64json(&json!({
            "alg": "RS256",
            "kid": account.url,
            "nonce": nonce,
            "url": key_change,
        }));
        let mut sig = vec![0u8; old.public().modulus_len()];
        old.sign(
            &signature::RSA_PKCS1_SHA256,
            &rng,
            format!("{protected}.{outer_payload}").as_bytes(),
            &mut sig,
        )
        .map_err(|_| crypto_err("signing with the certbot key"))?;
        let body = json!({
            "protected": protected,
            "payload": outer_payload,
            "signature": URL_SAFE_NO_PAD.encode(&sig),
        });
        let (status, headers, rsp) = send(
            &client,
            http::Method::POST,
            &key_change,
            Some(body.to_string().into_bytes()),
        )
        .await?;
        if status.is_success() {
            break;
        }
        let problem: Value = serde_json::from_slice(&rsp).unwrap_or(Value::Null);
        let kind = problem.get("type").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with(":badNonce") && tries < 3 {
            if let Some(n) = nonce_of(&headers) {
                nonce = n;
                continue;
            }
        }
        let detail = problem
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("no detail");
        return Err(CertError::Acme {
            detail: format!("the CA refused the account key rollover ({status}): {detail}"),
            soft: status.is_server_error(),
        });
    }
    tracing::info!(account = %account.url, "certbot's account now signs with a P-256 key");
    if let Err(e) = rewrite_certbot(&account.dir, &new, &pkcs8, renewal_conf) {
        // The account works for us either way; certbot would need a new account.
        tracing::warn!(error = %e, "could not update certbot's account files for the new key");
    }
    Ok(Adopted {
        url: account.url,
        pkcs8,
    })
}

/// Writes certbot's account for the new key (`<new id>/` beside the old directory, EC JWK), points
/// the renewal conf at it and removes the old directory, whose key the CA no longer accepts.
fn rewrite_certbot(
    old_dir: &Path,
    new: &EcdsaKeyPair,
    pkcs8: &[u8],
    renewal_conf: &Path,
) -> Result<(), CertError> {
    let parent = old_dir
        .parent()
        .ok_or_else(|| err(old_dir, "no parent directory"))?;
    let old_id = old_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(old_dir, "bad directory name"))?
        .to_string();
    let id = certbot_id(new);
    let dir = parent.join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| CertError::io("creating", &dir, e))?;
    for (file, mode) in [("regr.json", 0o644), ("meta.json", 0o644)] {
        let from = old_dir.join(file);
        if let Ok(bytes) = std::fs::read(&from) {
            snikket_runtime::files::write_atomic(&dir.join(file), &bytes, mode)?;
        }
    }
    let d = p256_private_scalar(pkcs8).ok_or_else(|| crypto_err("unexpected key encoding"))?;
    let mut jwk = p256_jwk(new);
    jwk["d"] = Value::String(URL_SAFE_NO_PAD.encode(d));
    snikket_runtime::files::write_atomic(
        &dir.join("private_key.json"),
        jwk.to_string().as_bytes(),
        0o400,
    )?;
    if let Ok(text) = std::fs::read_to_string(renewal_conf) {
        let mut changed = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| match line.split_once('=') {
                Some((k, v)) if k.trim() == "account" && v.trim() == old_id => {
                    changed = true;
                    format!("account = {id}")
                }
                _ => line.to_string(),
            })
            .collect();
        if changed {
            let mut out = lines.join("\n");
            out.push('\n');
            snikket_runtime::files::write_atomic(renewal_conf, out.as_bytes(), 0o644)?;
        }
    }
    if dir != old_dir {
        std::fs::remove_dir_all(old_dir).map_err(|e| CertError::io("removing", old_dir, e))?;
    }
    tracing::info!(dir = %dir.display(), "certbot's account files now hold the new key");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_dir_follows_certbot() {
        let le = Path::new("/le");
        assert_eq!(
            server_dir(le, "https://acme-v02.api.letsencrypt.org/directory").unwrap(),
            PathBuf::from("/le/accounts/acme-v02.api.letsencrypt.org/directory")
        );
        assert_eq!(
            server_dir(le, "https://127.0.0.1:14000/dir").unwrap(),
            PathBuf::from("/le/accounts/127.0.0.1:14000/dir")
        );
        assert!(server_dir(le, "https://x/../../etc").is_none());
        assert!(server_dir(le, "ftp://x/dir").is_none());
    }

    #[test]
    fn p256_key_round_trips_through_the_jwk_members() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let jwk = p256_jwk(&pair);
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        let d = p256_private_scalar(pkcs8.as_ref()).unwrap();
        assert_eq!(p256_pkcs8(d, &x, &y).unwrap(), pkcs8.as_ref());
        assert!(p256_pkcs8(&d[1..], &x, &y).is_none());
        assert_eq!(certbot_id(&pair).len(), 32);
    }

    #[test]
    fn renewal_conf_account_line_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("x.conf");
        std::fs::write(
            &conf,
            "version = 2.1.0\n[renewalparams]\naccount = 0123abcd\nserver = https://x/dir\n",
        )
        .unwrap();
        assert_eq!(renewal_account(&conf).as_deref(), Some("0123abcd"));
        assert_eq!(renewal_account(&dir.path().join("none")), None);
    }
}
