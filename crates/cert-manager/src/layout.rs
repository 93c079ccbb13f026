//! Certbot's on-disk layout under `/snikket/letsencrypt`: `archive/<name>/{cert,chain,fullchain,privkey}N.pem`,
//! `live/<name>/*.pem` symlinks into the archive, `renewal/<name>.conf`.
//!
//! Publishing a new certificate is a list of [`Step`]s: first every archive file of the new
//! version is written atomically, then the live symlinks are swapped one by one (each swap is an
//! atomic rename). A crash can leave the live links pointing at two versions; [`Layout::repair`]
//! (run at every start) points them all at the newest complete, matching version again. The unit
//! tests below crash after every step and check that.

use crate::error::CertError;
use snikket_runtime::files::write_atomic;
use std::path::{Path, PathBuf};

/// The four files of a lineage, in the order the live links are swapped.
pub const KINDS: [&str; 4] = ["cert", "chain", "privkey", "fullchain"];

/// Name of the marker file in the live directory while the certificate there is our self-signed
/// bootstrap (or the long-lived self-signed certificate when ACME is off).
/// The consumers' resolver reads the same name.
pub const SELF_SIGNED_MARKER: &str = snikket_runtime::tls::BOOTSTRAP_MARKER;

/// Paths of one certificate lineage (certificate name = DOMAIN_ASCII).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    name: String,
}

/// The certificate currently installed in the live directory.
#[derive(Debug, Clone)]
pub struct Installed {
    /// PEM of the leaf and intermediates.
    pub fullchain_pem: String,
    /// PEM of the private key.
    pub key_pem: String,
    /// DER of the leaf certificate.
    pub leaf_der: Vec<u8>,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// DNS names (subjectAltName).
    pub names: Vec<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Our self-signed bootstrap (marker file present, or issuer equals subject).
    pub self_signed: bool,
}

/// One step of publishing a new version.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write an archive file (atomically).
    Write {
        /// Target.
        path: PathBuf,
        /// Content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// Point `live/<name>/<kind>.pem` at `archive/<name>/<kind>N.pem` (atomic rename of a new link).
    Link {
        /// `cert`, `chain`, `privkey` or `fullchain`.
        kind: &'static str,
        /// Archive version.
        version: u32,
    },
    /// Remove the self-signed marker.
    Unmark,
}

impl Layout {
    /// The lineage `name` under `root` (the letsencrypt directory).
    pub fn new(root: &Path, name: &str) -> Self {
        Layout {
            root: root.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// `live/<name>`.
    pub fn live_dir(&self) -> PathBuf {
        self.root.join("live").join(&self.name)
    }

    /// `archive/<name>`.
    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("archive").join(&self.name)
    }

    /// `renewal/<name>.conf`.
    pub fn renewal_conf(&self) -> PathBuf {
        self.root
            .join("renewal")
            .join(format!("{}.conf", self.name))
    }

    /// `live/<name>/<kind>.pem`.
    pub fn live(&self, kind: &str) -> PathBuf {
        self.live_dir().join(format!("{kind}.pem"))
    }

    /// `archive/<name>/<kind>N.pem`.
    pub fn archived(&self, kind: &str, version: u32) -> PathBuf {
        self.archive_dir().join(format!("{kind}{version}.pem"))
    }

    fn marker(&self) -> PathBuf {
        self.live_dir().join(SELF_SIGNED_MARKER)
    }

    /// Whether the self-signed marker is present.
    pub fn marked_self_signed(&self) -> bool {
        self.marker().exists()
    }

    /// Reads and checks the live pair; `None` when missing, unreadable or mismatched.
    pub fn read_installed(&self) -> Option<Installed> {
        let fullchain = std::fs::read(self.live("fullchain")).ok()?;
        let key = std::fs::read(self.live("privkey")).ok()?;
        let installed = describe(&fullchain, &key).ok()?;
        Some(Installed {
            self_signed: installed.self_signed || self.marked_self_signed(),
            ..installed
        })
    }

    /// Writes a self-signed certificate for `names` valid for `days` as plain live files plus the
    /// marker, so that the other services can start. Key first, chain last.
    pub fn write_self_signed(&self, names: &[String], days: i64) -> Result<(), CertError> {
        let dir = self.live_dir();
        std::fs::create_dir_all(&dir).map_err(|e| CertError::io("creating", &dir, e))?;
        write_atomic(
            &self.marker(),
            b"snikket self-signed bootstrap certificate\n",
            0o644,
        )?;
        snikket_runtime::tls::write_self_signed_live_dir(&dir, names, days)?;
        Ok(())
    }

    /// Versions present in the archive (any file named `<kind>N.pem`), ascending.
    pub fn versions(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.archive_dir()) else {
            return out;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(".pem") else {
                continue;
            };
            for kind in KINDS {
                if let Some(n) = stem.strip_prefix(kind) {
                    if let Ok(n) = n.parse::<u32>() {
                        out.push(n);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The steps that publish a new version: archive files, then the live links, then the marker.
    pub fn publish_steps(&self, cert: &str, chain: &str, key: &str) -> Vec<Step> {
        let version = self.versions().last().copied().unwrap_or(0) + 1;
        let fullchain = format!("{}{}", ensure_nl(cert), chain);
        let mut steps = vec![
            Step::Write {
                path: self.archived("privkey", version),
                data: key.as_bytes().to_vec(),
                // Group-readable like the bootstrap key: the proxy and server share PGID.
                mode: 0o640,
            },
            Step::Write {
                path: self.archived("cert", version),
                data: cert.as_bytes().to_vec(),
                mode: 0o644,
            },
            Step::Write {
                path: self.archived("chain", version),
                data: chain.as_bytes().to_vec(),
                mode: 0o644,
            },
            Step::Write {
                path: self.archived("fullchain", version),
                data: fullchain.into_bytes(),
                mode: 0o644,
            },
        ];
        for kind in KINDS {
            steps.push(Step::Link { kind, version });
        }
        steps.push(Step::Unmark);
        steps
    }

    /// Performs one step.
    pub fn apply(&self, step: &Step) -> Result<(), CertError> {
        match step {
            Step::Write { path, data, mode } => {
                write_atomic(path, data, *mode)?;
                Ok(())
            }
            Step::Link { kind, version } => self.link(kind, *version),
            Step::Unmark => match std::fs::remove_file(self.marker()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(CertError::io("removing", self.marker(), e)),
            },
        }
    }

    /// Publishes a new version (see the module docs for the ordering).
    pub fn publish(&self, cert: &str, chain: &str, key: &str) -> Result<u32, CertError> {
        let steps = self.publish_steps(cert, chain, key);
        let version = self.versions().last().copied().unwrap_or(0) + 1;
        for step in &steps {
            self.apply(step)?;
        }
        Ok(version)
    }

    #[cfg(unix)]
    fn link(&self, kind: &str, version: u32) -> Result<(), CertError> {
        let live = self.live(kind);
        let dir = self.live_dir();
        std::fs::create_dir_all(&dir).map_err(|e| CertError::io("creating", &dir, e))?;
        // Relative like certbot's, so the volume can be mounted anywhere.
        let target = PathBuf::from("../../archive")
            .join(&self.name)
            .join(format!("{kind}{version}.pem"));
        let tmp = dir.join(format!(".{kind}.pem.link-{:08x}", rand::random::<u32>()));
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| CertError::io("linking", &tmp, e))?;
        if let Err(e) = std::fs::rename(&tmp, &live) {
            let _ = std::fs::remove_file(&tmp);
            return Err(CertError::io("renaming into", &live, e));
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    #[cfg(not(unix))]
    fn link(&self, kind: &str, version: u32) -> Result<(), CertError> {
        let data = std::fs::read(self.archived(kind, version))
            .map_err(|e| CertError::io("reading", self.archived(kind, version), e))?;
        write_atomic(&self.live(kind), &data, 0o600)?;
        Ok(())
    }

    /// The newest archive version whose four files exist and whose key matches its chain.
    pub fn newest_complete(&self) -> Option<u32> {
        self.versions().into_iter().rev().find(|v| {
            let (Ok(fc), Ok(key)) = (
                std::fs::read(self.archived("fullchain", *v)),
                std::fs::read(self.archived("privkey", *v)),
            ) else {
                return false;
            };
            self.archived("cert", *v).is_file()
                && self.archived("chain", *v).is_file()
                && snikket_runtime::tls::certified_key(&fc, &key).is_ok()
        })
    }

    /// Which archive version a live link points at, if it is a link into our archive.
    pub fn linked_version(&self, kind: &str) -> Option<u32> {
        let target = std::fs::read_link(self.live(kind)).ok()?;
        let file = target.file_name()?.to_str()?.strip_suffix(".pem")?;
        file.strip_prefix(kind)?.parse().ok()
    }

    /// Makes the live directory consistent after a crash: when the live links do not all point at
    /// one complete version, or the live pair does not match, they are pointed at the newest
    /// complete version. Returns whether anything changed.
    pub fn repair(&self) -> Result<bool, CertError> {
        let Some(newest) = self.newest_complete() else {
            return Ok(false);
        };
        let linked: Vec<Option<u32>> = KINDS.iter().map(|k| self.linked_version(k)).collect();
        let consistent = linked.iter().all(|v| v.is_some() && *v == linked[0]);
        let pair_ok = self.read_installed().is_some();
        let marked = self.marked_self_signed();
        // Plain files that match (certificates copied by hand) are left alone; a self-signed
        // bootstrap is rolled forward to a completed archive version.
        if pair_ok && !marked && (consistent || !self.any_link_exists()) {
            return Ok(false);
        }
        if pair_ok && consistent {
            // Interrupted just before the marker was removed.
            self.apply(&Step::Unmark)?;
            return Ok(true);
        }
        tracing::warn!(
            version = newest,
            "live certificate links were inconsistent (interrupted update?); repairing"
        );
        for kind in KINDS {
            self.link(kind, newest)?;
        }
        self.apply(&Step::Unmark)?;
        Ok(true)
    }

    fn any_link_exists(&self) -> bool {
        KINDS.iter().any(|k| {
            std::fs::symlink_metadata(self.live(k)).is_ok_and(|m| m.file_type().is_symlink())
        })
    }

    /// Writes `renewal/<name>.conf` in certbot's format unless one exists (an adopted lineage keeps
    /// its own).
    pub fn write_renewal_conf_if_missing(
        &self,
        server: &str,
        reuse_key: bool,
    ) -> Result<(), CertError> {
        let path = self.renewal_conf();
        if path.exists() {
            return Ok(());
        }
        let live = self.live_dir();
        let text = format!(
            "# Written by snikket-cert-manager in certbot's format.\n\
             version = 2.1.0\n\
             archive_dir = {archive}\n\
             cert = {live}/cert.pem\n\
             privkey = {live}/privkey.pem\n\
             chain = {live}/chain.pem\n\
             fullchain = {live}/fullchain.pem\n\
             \n\
             [renewalparams]\n\
             authenticator = webroot\n\
             server = {server}\n\
             key_type = ecdsa\n\
             reuse_key = {reuse}\n",
            archive = self.archive_dir().display(),
            live = live.display(),
            reuse = if reuse_key { "True" } else { "False" },
        );
        write_atomic(&path, text.as_bytes(), 0o644)?;
        Ok(())
    }
}

fn ensure_nl(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// Parses a chain + key pair (the key must match the leaf).
pub fn describe(fullchain: &[u8], key: &[u8]) -> Result<Installed, CertError> {
    snikket_runtime::tls::certified_key(fullchain, key).map_err(CertError::Certificate)?;
    let mut reader = fullchain;
    let leaf = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| CertError::Certificate("no certificate in chain".into()))?
        .map_err(|e| CertError::Certificate(e.to_string()))?;
    let leaf_der = leaf.as_ref().to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf_der)
        .map_err(|e| CertError::Certificate(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_string());
            }
        }
    }
    let issuer = cert.issuer().to_string();
    let self_signed = cert.issuer() == cert.subject() || issuer.contains("Snikket self-signed");
    Ok(Installed {
        fullchain_pem: String::from_utf8_lossy(fullchain).into_owned(),
        key_pem: String::from_utf8_lossy(key).into_owned(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        leaf_der,
        names,
        issuer,
        self_signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec![
            "example.com".into(),
            "groups.example.com".into(),
            "share.example.com".into(),
        ]
    }

    /// A CA-signed pair (so it is not taken for our self-signed bootstrap).
    fn issued(ca: &snikket_testkit::TestCa) -> (String, String, String) {
        let leaf = ca.leaf(&["example.com", "groups.example.com", "share.example.com"]);
        (leaf.cert_pem, leaf.chain_pem, leaf.key_pem)
    }

    fn fingerprint(layout: &Layout) -> Option<Vec<u8>> {
        layout.read_installed().map(|i| i.leaf_der)
    }

    /// Crash after every prefix of the publishing steps, from both a bootstrap and an issued
    /// certificate: after `repair` the live pair always matches and is either the old or the new one.
    #[test]
    fn interrupted_publish_always_leaves_a_matching_pair() {
        let ca = snikket_testkit::TestCa::new();
        for from_bootstrap in [true, false] {
            let probe = tempfile::tempdir().unwrap();
            let steps_len = Layout::new(probe.path(), "example.com")
                .publish_steps("c", "", "k")
                .len();
            for crash_after in 0..=steps_len {
                let dir = tempfile::tempdir().unwrap();
                let layout = Layout::new(dir.path(), "example.com");
                if from_bootstrap {
                    layout.write_self_signed(&names(), 7).unwrap();
                } else {
                    let (c, ch, k) = issued(&ca);
                    layout.publish(&c, &ch, &k).unwrap();
                }
                let old = fingerprint(&layout).unwrap();
                let (c, ch, k) = issued(&ca);
                let steps = layout.publish_steps(&c, &ch, &k);
                for step in &steps[..crash_after] {
                    layout.apply(step).unwrap();
                }
                layout.repair().unwrap();
                let now = layout
                    .read_installed()
                    .unwrap_or_else(|| panic!("no matching pair after {crash_after} steps"));
                let new_complete = crash_after >= 4;
                let new_leaf = describe(format!("{c}{ch}").as_bytes(), k.as_bytes())
                    .unwrap()
                    .leaf_der;
                assert!(
                    now.leaf_der == old || now.leaf_der == new_leaf,
                    "crash after {crash_after}: neither old nor new"
                );
                if !new_complete {
                    assert_eq!(now.leaf_der, old, "crash after {crash_after}");
                }
                if crash_after == steps_len || (from_bootstrap && new_complete) {
                    // Finished, or rolled forward from the bootstrap.
                    assert_eq!(now.leaf_der, new_leaf, "crash after {crash_after}");
                    assert!(!now.self_signed);
                    assert!(!layout.marked_self_signed());
                }
                // Every live file is consistent with the others.
                let linked: Vec<_> = KINDS.iter().map(|k| layout.linked_version(k)).collect();
                if !from_bootstrap || new_complete {
                    assert!(linked.iter().all(|v| v.is_some() && *v == linked[0]));
                }
            }
        }
    }

    #[test]
    fn publish_writes_certbot_layout_with_private_key_modes() {
        use std::os::unix::fs::PermissionsExt;
        let ca = snikket_testkit::TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "example.com");
        let (c, ch, k) = issued(&ca);
        assert_eq!(layout.publish(&c, &ch, &k).unwrap(), 1);
        let (c2, ch2, k2) = issued(&ca);
        assert_eq!(layout.publish(&c2, &ch2, &k2).unwrap(), 2);
        for kind in KINDS {
            let target = std::fs::read_link(layout.live(kind)).unwrap();
            assert_eq!(
                target,
                PathBuf::from(format!("../../archive/example.com/{kind}2.pem"))
            );
        }
        let mode = std::fs::metadata(layout.archived("privkey", 2))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let fc = std::fs::read_to_string(layout.live("fullchain")).unwrap();
        assert_eq!(fc, format!("{c2}{ch2}"));
        assert_eq!(layout.versions(), vec![1, 2]);
        let installed = layout.read_installed().unwrap();
        assert_eq!(installed.names, names());
        assert!(!installed.self_signed);
    }

    #[test]
    fn bootstrap_is_marked_self_signed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "example.com");
        assert!(layout.read_installed().is_none());
        layout.write_self_signed(&names(), 7).unwrap();
        let i = layout.read_installed().unwrap();
        assert!(i.self_signed);
        assert!(i.issuer.contains("Snikket self-signed"));
        assert_eq!(i.names, names());
        assert!(!layout.repair().unwrap(), "nothing to repair");
    }

    #[test]
    fn hand_placed_plain_files_are_left_alone() {
        let ca = snikket_testkit::TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "example.com");
        let (c, ch, k) = issued(&ca);
        layout.publish(&c, &ch, &k).unwrap();
        // An operator replaces the links by plain files of another certificate.
        let leaf = ca.write_live_dir(&layout.live_dir(), &["example.com"]);
        assert!(!layout.repair().unwrap());
        let now = std::fs::read_to_string(layout.live("fullchain")).unwrap();
        assert_eq!(now, leaf.fullchain_pem);
    }
}
