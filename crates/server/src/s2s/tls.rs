//! TLS for federation: our certificate both ways (as server and as client), peers' certificates
//! checked against the Mozilla roots plus `SNIKKET_TWEAK_S2S_CAFILE`.
//!
//! A peer's client certificate is taken during the handshake without judging it, and checked
//! afterwards for the domain the peer claims, like a server certificate: many CAs no longer
//! issue certificates for client authentication, and XMPP servers present the certificate of
//! their domain in both roles.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use snikket_config::TlsProfile;
use snikket_runtime::CertResolver;
use std::path::Path;
use std::sync::Arc;

/// Why the federation TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The extra CA file could not be read or holds no certificate.
    #[error("SNIKKET_TWEAK_S2S_CAFILE {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate verifier could not be built.
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// The TLS side of federation.
pub struct Tls {
    /// For peers connecting to us: asks for their certificate.
    pub server: Arc<rustls::ServerConfig>,
    /// For connecting to peers: verifies theirs, presents ours.
    pub client: Arc<rustls::ClientConfig>,
    verifier: Arc<WebPkiServerVerifier>,
}

static MODERN: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
static WIDER: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(profile: TlsProfile) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match profile {
        TlsProfile::Modern => MODERN,
        TlsProfile::Intermediate | TlsProfile::Old => WIDER,
    }
}

impl Tls {
    /// Configurations for `profile` with the certificate of `resolver`.
    pub fn new(
        profile: TlsProfile,
        resolver: Arc<CertResolver>,
        cafile: Option<&Path>,
    ) -> Result<Tls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = cafile {
            let bad = |reason: String| TlsSetupError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("no usable CA certificate in the file".into()));
            }
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(profile))?
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                algs: provider.signature_verification_algorithms,
            }))
            .with_cert_resolver(resolver.clone());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions(profile))?
            .with_webpki_verifier(verifier.clone())
            .with_client_cert_resolver(Arc::new(OurCert(resolver)));
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
            verifier,
        })
    }

    /// Whether `chain` (end entity first) is a trusted certificate for `domain` now.
    pub fn proves(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        let (Some(end), Ok(name)) = (chain.first(), ServerName::try_from(domain.to_string()))
        else {
            return false;
        };
        match self
            .verifier
            .verify_server_cert(end, &chain[1..], &name, &[], UnixTime::now())
        {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(%domain, error = %e, "peer certificate not valid for its domain");
                false
            }
        }
    }
}

/// Presents the current certificate of our domain when a peer asks for one.
#[derive(Debug)]
struct OurCert(Arc<CertResolver>);

impl ResolvesClientCert for OurCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }

    fn has_certs(&self) -> bool {
        self.0.has_certificate()
    }
}

/// Accepts any client certificate whose handshake signature is right; which domain it proves is
/// decided after the handshake ([`Tls::proves`]), and a peer without one can still use dialback
/// errors to learn why it is refused.
#[derive(Debug)]
struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
