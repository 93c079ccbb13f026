//! TLS certificates from certbot's layout, reloaded when renewed, and rustls server configs.
//!
//! Consumers (XMPP server, web proxy, TURN) watch the files rather than wait for a message: the
//! live directory is the one contract every writer already honours (certbot, our cert manager,
//! an operator copying files by hand), and a poll of two `stat`s every few seconds costs nothing.
//! A renewed certificate is swapped in for new handshakes; open connections keep theirs.

use crate::RuntimeError;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use snikket_config::TlsProfile;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Where a certificate chain and its key live (certbot layout: `fullchain.pem`, `privkey.pem`).
#[derive(Debug, Clone)]
pub struct CertSource {
    /// The chain file.
    pub chain: PathBuf,
    /// The key file.
    pub key: PathBuf,
}

impl CertSource {
    /// `DIR/fullchain.pem` and `DIR/privkey.pem`.
    pub fn live_dir(dir: &Path) -> Self {
        CertSource {
            chain: dir.join("fullchain.pem"),
            key: dir.join("privkey.pem"),
        }
    }

    /// The marker the certificate manager leaves beside a self-signed bootstrap certificate
    /// (`live/<DOMAIN>/self-signed`), removed when a CA-issued certificate replaces it.
    pub fn bootstrap_marker(&self) -> Option<PathBuf> {
        self.chain.parent().map(|d| d.join(BOOTSTRAP_MARKER))
    }

    /// Whether both files exist.
    pub fn exists(&self) -> bool {
        self.chain.is_file() && self.key.is_file()
    }

    fn stamp(&self) -> Option<(SystemTime, u64, SystemTime, u64)> {
        let a = std::fs::metadata(&self.chain).ok()?;
        let b = std::fs::metadata(&self.key).ok()?;
        Some((a.modified().ok()?, a.len(), b.modified().ok()?, b.len()))
    }

    /// Loads and checks the pair: the key must match the leaf certificate.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, RuntimeError> {
        let chain_pem =
            std::fs::read(&self.chain).map_err(|e| RuntimeError::io("reading", &self.chain, e))?;
        let key_pem =
            std::fs::read(&self.key).map_err(|e| RuntimeError::io("reading", &self.key, e))?;
        certified_key(&chain_pem, &key_pem).map_err(|reason| RuntimeError::BadCertificate {
            path: self.chain.clone(),
            reason,
        })
    }
}

/// File name of the self-signed bootstrap marker in a live directory.
pub const BOOTSTRAP_MARKER: &str = "self-signed";

/// Builds a rustls `CertifiedKey` from PEM text, checking that key and certificate match.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &chain_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("unreadable certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in PEM".into());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("unreadable key PEM: {e}"))?
        .ok_or_else(|| "no private key in PEM".to_string())?;
    let signing = any_supported_type(&key).map_err(|e| format!("unsupported key: {e}"))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| format!("key does not match certificate: {e}"))?;
    Ok(Arc::new(ck))
}

/// The expiry (`notAfter`) of the first certificate in a PEM chain, as a Unix timestamp.
pub fn not_after(chain_pem: &[u8]) -> Option<i64> {
    let der = rustls_pemfile::certs(&mut &chain_pem[..]).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// A certificate resolver that always serves the newest valid pair from a [`CertSource`].
#[derive(Debug)]
pub struct CertResolver {
    source: CertSource,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    stamp: RwLock<Option<(SystemTime, u64, SystemTime, u64)>>,
    bootstrap: AtomicBool,
}

impl CertResolver {
    /// Creates a resolver and loads the pair if it exists already.
    pub fn new(source: CertSource) -> Arc<Self> {
        let r = Arc::new(CertResolver {
            source,
            current: RwLock::new(None),
            stamp: RwLock::new(None),
            bootstrap: AtomicBool::new(false),
        });
        r.reload();
        r
    }

    /// Whether a certificate is loaded.
    pub fn has_certificate(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// Whether the loaded certificate is the certificate manager's self-signed bootstrap (its
    /// marker file was present at the last check). Browsers warn about such a certificate, so the
    /// web proxy keeps showing its startup page on plain HTTP meanwhile.
    pub fn is_bootstrap(&self) -> bool {
        self.bootstrap.load(Ordering::Relaxed)
    }

    /// Re-reads the files if they changed. A half-written or mismatched pair is ignored (the old
    /// certificate stays) and retried at the next call. Returns whether a new pair was loaded.
    pub fn reload(&self) -> bool {
        let marked = self.source.bootstrap_marker().is_some_and(|m| m.is_file());
        self.bootstrap.store(marked, Ordering::Relaxed);
        let stamp = self.source.stamp();
        if stamp.is_none() {
            return false;
        }
        if self.stamp.read().map(|s| *s == stamp).unwrap_or(false) {
            return false;
        }
        match self.source.load() {
            Ok(ck) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Some(ck);
                }
                if let Ok(mut s) = self.stamp.write() {
                    *s = stamp;
                }
                tracing::info!(chain = %self.source.chain.display(), "certificate loaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate not (yet) usable; keeping the previous one");
                false
            }
        }
    }

    /// Polls the files every `every` until `shutdown`, swapping in renewed certificates.
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => { me.reload(); }
                }
            }
        })
    }

    /// The current pair, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate covers DOMAIN, groups.DOMAIN and share.DOMAIN, so SNI needs no lookup.
        self.current()
    }
}

/// A rustls server config for a Snikket TLS profile, with the given ALPN protocols.
pub fn server_config(
    profile: TlsProfile,
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, RuntimeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match profile {
        TlsProfile::Modern => &[&rustls::version::TLS13],
        TlsProfile::Intermediate | TlsProfile::Old => {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A self-signed certificate and key (PEM) for `names`, valid for `days`.
pub fn self_signed(names: &[String], days: i64) -> Result<(String, String), RuntimeError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "Snikket self-signed (not trusted)",
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a self-signed pair into a certbot-style live directory, key first so that a reader that
/// sees the new chain also finds its key.
pub fn write_self_signed_live_dir(
    dir: &Path,
    names: &[String],
    days: i64,
) -> Result<(), RuntimeError> {
    let (cert, key) = self_signed(names, days)?;
    crate::files::write_atomic(&dir.join("privkey.pem"), key.as_bytes(), 0o640)?;
    crate::files::write_atomic(&dir.join("cert.pem"), cert.as_bytes(), 0o644)?;
    crate::files::write_atomic(&dir.join("chain.pem"), b"", 0o644)?;
    crate::files::write_atomic(&dir.join("fullchain.pem"), cert.as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_loads_and_swaps_renewed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live/example.com");
        let names = vec!["example.com".to_string(), "groups.example.com".to_string()];
        let resolver = CertResolver::new(CertSource::live_dir(&live));
        assert!(!resolver.has_certificate());
        write_self_signed_live_dir(&live, &names, 2).unwrap();
        assert!(resolver.reload());
        let first = resolver.current().unwrap();
        assert!(!resolver.reload(), "unchanged files are not reloaded");
        // A mismatched pair (new chain, old key) is refused; the old certificate stays.
        let (other_cert, _) = self_signed(&names, 2).unwrap();
        std::fs::write(live.join("fullchain.pem"), format!("{other_cert}\n")).unwrap();
        assert!(!resolver.reload());
        assert!(Arc::ptr_eq(&first, &resolver.current().unwrap()));
        write_self_signed_live_dir(&live, &names, 3).unwrap();
        assert!(resolver.reload());
        assert!(!Arc::ptr_eq(&first, &resolver.current().unwrap()));
        let exp = not_after(&std::fs::read(live.join("fullchain.pem")).unwrap()).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(exp > now + 2 * 86400 && exp <= now + 3 * 86400 + 60);
    }

    #[test]
    fn profiles_build() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = CertResolver::new(CertSource::live_dir(dir.path()));
        for p in [
            TlsProfile::Modern,
            TlsProfile::Intermediate,
            TlsProfile::Old,
        ] {
            let cfg = server_config(p, resolver.clone(), &[b"xmpp-client"]).unwrap();
            assert_eq!(cfg.alpn_protocols, vec![b"xmpp-client".to_vec()]);
        }
    }
}
