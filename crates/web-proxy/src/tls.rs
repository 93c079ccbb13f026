//! The rustls configuration of the HTTPS listener from `SNIKKET_TWEAK_HTTP_TLS_VERSIONS` and
//! `SNIKKET_TWEAK_HTTP_TLS_CIPHERS` (spec 6.1), with ALPN `h2` and `http/1.1`.
//!
//! As with OpenSSL's `ssl_ciphers`, the cipher list governs TLS 1.2 only; TLS 1.3 suites are
//! always the full, safe set. `DHE-*` names have no rustls equivalent and are skipped.

use crate::ProxyError;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::server::ResolvesServerCert;
use rustls::{CipherSuite, SupportedCipherSuite};
use snikket_config::ProxyConfig;
use std::sync::Arc;

/// The rustls TLS 1.2 suite for an OpenSSL cipher name, if rustls has it.
pub fn tls12_suite(name: &str) -> Option<SupportedCipherSuite> {
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// Builds the server config.
pub fn server_config(
    proxy: &ProxyConfig,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    if proxy.tls13 {
        suites.extend([
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ]);
    }
    if proxy.tls12 {
        let before = suites.len();
        for name in &proxy.tls_ciphers {
            if let Some(s) = tls12_suite(name) {
                if !suites.iter().any(|x| x.suite() == s.suite()) {
                    suites.push(s);
                }
            }
        }
        if suites.len() == before && !proxy.tls13 {
            return Err(ProxyError::NoCiphers);
        }
    }
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    };
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if proxy.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if proxy.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(cfg))
}

/// The suites a config offers, for logs and tests.
pub fn suite_names(cfg: &rustls::ServerConfig) -> Vec<CipherSuite> {
    cfg.crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| s.suite())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use snikket_runtime::{CertResolver, CertSource};

    fn proxy(tls12: bool, tls13: bool, ciphers: &[&str]) -> ProxyConfig {
        ProxyConfig {
            http_port: 80,
            https_port: 443,
            internal_http_host: "localhost".into(),
            portal_host: "localhost".into(),
            tls12,
            tls13,
            tls_ciphers: ciphers.iter().map(|s| s.to_string()).collect(),
            serve_http: true,
            serve_https: true,
            trusted_proxies: vec![],
            acme_challenge_dir: "/nonexistent".into(),
        }
    }

    #[test]
    fn cipher_list_limits_tls12_only() {
        let resolver =
            CertResolver::new(CertSource::live_dir(std::path::Path::new("/nonexistent")));
        let cfg = server_config(
            &proxy(
                true,
                true,
                &["ECDHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"],
            ),
            resolver.clone(),
        )
        .unwrap();
        let names = suite_names(&cfg);
        assert_eq!(names.len(), 4);
        assert!(names.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256));
        assert!(!names.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256));
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(matches!(
            server_config(
                &proxy(true, false, &["DHE-RSA-AES128-GCM-SHA256"]),
                resolver.clone()
            ),
            Err(ProxyError::NoCiphers)
        ));
        let only13 = server_config(&proxy(false, true, &[]), resolver).unwrap();
        assert_eq!(suite_names(&only13).len(), 3);
    }
}
