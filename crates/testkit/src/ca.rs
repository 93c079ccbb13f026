//! A throwaway certificate authority and leaf certificates for tests.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::Path;

/// A test CA that signs leaf certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

/// A PEM certificate chain and key.
pub struct Leaf {
    /// Leaf certificate followed by the CA certificate.
    pub fullchain_pem: String,
    /// Leaf certificate only.
    pub cert_pem: String,
    /// The CA certificate (the chain).
    pub chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

impl TestCa {
    /// Makes a new CA.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "snikket test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-sign ca");
        let issuer_key = KeyPair::from_pem(&key.serialize_pem()).expect("reload ca key");
        let issuer = rcgen::Issuer::new(params, issuer_key);
        TestCa { cert, key, issuer }
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA key in PEM (for tools that want to sign with it).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a leaf certificate for `names`.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            fullchain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            cert_pem: cert.pem(),
            chain_pem: self.cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes a certbot-style live directory (`fullchain.pem`, `privkey.pem`, `cert.pem`, `chain.pem`).
    pub fn write_live_dir(&self, dir: &Path, names: &[&str]) -> Leaf {
        std::fs::create_dir_all(dir).expect("create live dir");
        let leaf = self.leaf(names);
        std::fs::write(dir.join("fullchain.pem"), &leaf.fullchain_pem).expect("write fullchain");
        std::fs::write(dir.join("privkey.pem"), &leaf.key_pem).expect("write privkey");
        std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).expect("write cert");
        std::fs::write(dir.join("chain.pem"), &leaf.chain_pem).expect("write chain");
        leaf
    }
}

/// A self-signed leaf certificate for `names`, chained to no CA (`chain_pem` is empty and
/// `fullchain_pem` is the certificate alone).
pub fn self_signed(names: &[&str]) -> Leaf {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("self-signed params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    let key = KeyPair::generate().expect("self-signed key");
    let cert = params.self_signed(&key).expect("self-sign");
    Leaf {
        fullchain_pem: cert.pem(),
        cert_pem: cert.pem(),
        chain_pem: String::new(),
        key_pem: key.serialize_pem(),
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
