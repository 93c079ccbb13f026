//! The renewal loop: bootstrap certificate, due dates (2/3 of the lifetime or ARI), attempts,
//! retries with backoff and jitter, the `has-errors` flag and `errors.log` (spec 7.2, 7.3).

use crate::acme::{self, AcmeSettings};
use crate::error::CertError;
use crate::layout::{Installed, Layout};
use instant_acme_ring::Account;
use snikket_config::Config;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Lifetime of the bootstrap certificate written before the first real one.
pub const BOOTSTRAP_DAYS: i64 = 7;
/// The bootstrap is rewritten when it has less than this left.
pub const BOOTSTRAP_REFRESH_SECS: i64 = 2 * 86400;
/// Lifetime of the self-signed certificate kept when ACME is off.
pub const SELF_SIGNED_DAYS: i64 = 825;
/// Longest sleep between checks, so that clock jumps and new ARI windows are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Upper bound of one attempt (the HTTP client has no timeouts of its own).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(600);
/// Backoff after hard failures: 1 min doubling up to 6 h.
const BACKOFF_BASE_SECS: u64 = 60;
const BACKOFF_MAX_SECS: u64 = 6 * 3600;

/// What the manager knows and plans; served over gRPC.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Next planned attempt, Unix seconds (0: none).
    pub next_attempt: i64,
    /// Summary of the last failure; empty after success.
    pub last_error: String,
    /// Last successful issuance, Unix seconds.
    pub last_success: i64,
    /// Consecutive failures.
    pub failures: u32,
}

/// Outcome of an attempt requested over gRPC.
#[derive(Debug, Clone)]
pub struct RenewOutcome {
    /// A new certificate was installed.
    pub ok: bool,
    /// What happened.
    pub message: String,
}

/// A request to attempt now.
pub type RenewRequest = oneshot::Sender<RenewOutcome>;

/// Owns the lineage of DOMAIN.
pub struct Manager {
    layout: Layout,
    names: Vec<String>,
    acme_enabled: bool,
    reuse_key: bool,
    wait_for_http: bool,
    settings: AcmeSettings,
    has_errors: PathBuf,
    errors_log: PathBuf,
    report_dsn: Option<String>,
    status: Mutex<Status>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// `PUID`/`PGID`: owner of everything under the letsencrypt directory.
    owner: Option<(u32, u32)>,
    root: PathBuf,
}

impl Manager {
    /// Builds the manager from the configuration.
    pub fn new(config: &Config) -> Self {
        let root = config.letsencrypt_dir();
        let (directory_url, notes) =
            apply_certbot_options(&config.certs.directory_url, &config.certs.certbot_options);
        for note in notes {
            tracing::warn!(option = %note, "SNIKKET_CERTBOT_OPTIONS");
        }
        let host = directory_key(&directory_url);
        Manager {
            owner: config.puid.zip(config.pgid),
            root: root.clone(),
            layout: Layout::new(&root, &config.domain.ascii),
            names: vec![
                config.domain.ascii.clone(),
                config.groups_domain(),
                config.share_domain(),
            ],
            acme_enabled: config.certs.acme,
            reuse_key: config.certs.reuse_key,
            wait_for_http: config.certs.wait_for_http,
            settings: AcmeSettings {
                directory_url,
                ca_bundle: config.certs.ca_bundle.clone(),
                email: config.admin_email.clone(),
                account_file: root
                    .join("accounts")
                    .join("snikket")
                    .join(format!("{host}.json")),
                challenge_dir: config.certs.acme_challenge_dir.clone(),
                letsencrypt_dir: root.clone(),
                renewal_conf: Layout::new(&root, &config.domain.ascii).renewal_conf(),
            },
            has_errors: config.has_errors_path(),
            errors_log: root.join("errors.log"),
            report_dsn: config.certs.report_dsn.clone(),
            status: Mutex::new(Status::default()),
            account: tokio::sync::Mutex::new(None),
        }
    }

    /// The lineage.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The three names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether ACME is on.
    pub fn acme_enabled(&self) -> bool {
        self.acme_enabled
    }

    /// A snapshot of the status.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
    }

    /// Repairs an interrupted update and makes sure some certificate is installed: a short-lived
    /// self-signed bootstrap (ACME on) or a long-lived self-signed one (ACME off). A certificate
    /// that is not ours (issued by a CA, or placed by hand) is never overwritten here.
    pub fn ensure_certificate(&self) -> Result<(), CertError> {
        self.layout.repair()?;
        let now = now();
        let installed = self.layout.read_installed();
        let (days, refresh) = if self.acme_enabled {
            (BOOTSTRAP_DAYS, BOOTSTRAP_REFRESH_SECS)
        } else {
            (SELF_SIGNED_DAYS, SELF_SIGNED_DAYS * 86400 / 3)
        };
        let write = match &installed {
            None => true,
            Some(i) if i.self_signed => {
                i.not_after - now < refresh || !self.names.iter().all(|n| i.names.contains(n))
            }
            Some(_) => false,
        };
        if write {
            self.layout.write_self_signed(&self.names, days)?;
            tracing::info!(
                dir = %self.layout.live_dir().display(),
                days,
                "wrote self-signed certificate"
            );
        }
        Ok(())
    }

    /// When the installed certificate should be renewed (Unix seconds): at once for none or a
    /// self-signed one, at 2/3 of the lifetime, or earlier if the CA's ARI window says so.
    pub fn due(installed: Option<&Installed>, ari: Option<i64>) -> i64 {
        match installed {
            None => 0,
            Some(i) if i.self_signed => 0,
            Some(i) => {
                let due = i.not_before + (i.not_after - i.not_before) * 2 / 3;
                ari.map_or(due, |a| a.min(due))
            }
        }
    }

    /// Whether the certificate covers all three names (certbot's `--expand`).
    fn covers(&self, installed: &Installed) -> bool {
        self.names.iter().all(|n| installed.names.contains(n))
    }

    async fn account(&self) -> Result<Account, CertError> {
        let mut guard = self.account.lock().await;
        if let Some(a) = guard.as_ref() {
            return Ok(a.clone());
        }
        let a = acme::account(&self.settings).await?;
        *guard = Some(a.clone());
        Ok(a)
    }

    async fn next_due(&self) -> i64 {
        let installed = self.layout.read_installed();
        let mut ari = None;
        if let Some(i) = installed.as_ref().filter(|i| !i.self_signed) {
            if !self.covers(i) {
                return 0;
            }
            if let Some(acct) = self.account.lock().await.clone() {
                ari = tokio::time::timeout(
                    Duration::from_secs(30),
                    acme::suggested_renewal(&acct, &i.leaf_der),
                )
                .await
                .ok()
                .flatten();
            }
        }
        Self::due(installed.as_ref(), ari)
    }

    /// Gives the letsencrypt directory to `PUID`/`PGID` (Snikket's entrypoint does `chown -R`).
    pub fn apply_owner(&self) {
        #[cfg(unix)]
        {
            let failed = snikket_runtime::files::chown_tree(&self.root, self.owner);
            if failed > 0 {
                tracing::warn!(failed, dir = %self.root.display(), "Failed to adjust the permissions of some files/directories");
            }
        }
    }

    /// One issuance attempt; installs the certificate on success and records the outcome.
    pub async fn attempt(&self) -> Result<u32, CertError> {
        let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.issue_and_install()).await {
            Ok(r) => r,
            Err(_) => Err(CertError::Acme {
                detail: format!("no result from the ACME server within {ATTEMPT_TIMEOUT:?}"),
                soft: true,
            }),
        };
        match &result {
            Ok(version) => {
                tracing::info!(version, names = ?self.names, "certificate installed");
                self.apply_owner();
                self.update(|s| {
                    s.last_error.clear();
                    s.last_success = now();
                    s.failures = 0;
                });
                remove_if_exists(&self.has_errors);
                remove_if_exists(&self.errors_log);
            }
            Err(e) => {
                tracing::error!(error = %e, "certificate issuance failed");
                let summary = e.to_string();
                self.update(|s| {
                    s.last_error = summary.clone();
                    s.failures += 1;
                });
                let detail = match e {
                    CertError::Acme { detail, .. } => detail.clone(),
                    other => other.to_string(),
                };
                if let Err(err) = snikket_runtime::files::write_atomic(
                    &self.errors_log,
                    format!("{}\n", detail.trim_end()).as_bytes(),
                    0o644,
                ) {
                    tracing::warn!(error = %err, "writing errors.log");
                }
                if let Err(err) = snikket_runtime::files::write_atomic(&self.has_errors, b"", 0o644)
                {
                    tracing::warn!(error = %err, "writing has-errors flag");
                }
                if let Some(dsn) = &self.report_dsn {
                    crate::report::send(
                        dsn,
                        self.settings.ca_bundle.as_deref(),
                        "Certificate issuance failure",
                        &detail,
                    )
                    .await;
                }
            }
        }
        result
    }

    async fn issue_and_install(&self) -> Result<u32, CertError> {
        let account = self.account().await?;
        let installed = self.layout.read_installed();
        let reused = installed
            .as_ref()
            .filter(|i| self.reuse_key && !i.self_signed)
            .and_then(|i| rcgen::KeyPair::from_pem(&i.key_pem).ok());
        let key = match reused {
            Some(k) => {
                tracing::debug!("reusing the installed private key");
                k
            }
            None => {
                rcgen::KeyPair::generate().map_err(|e| CertError::Certificate(e.to_string()))?
            }
        };
        let chain = acme::issue(&account, &self.settings, &self.names, &key).await?;
        let (cert, rest) = split_chain(&chain)
            .ok_or_else(|| CertError::Certificate("the CA returned no certificate".into()))?;
        let version = self.layout.publish(&cert, &rest, &key.serialize_pem())?;
        self.layout
            .write_renewal_conf_if_missing(&self.settings.directory_url, self.reuse_key)?;
        Ok(version)
    }

    /// Runs until `shutdown`: attempts when due, on requests, and retries failures.
    pub async fn run(
        &self,
        mut requests: mpsc::Receiver<RenewRequest>,
        shutdown: CancellationToken,
    ) -> Result<(), CertError> {
        if !self.acme_enabled {
            tracing::info!("acme disabled: keeping the self-signed certificate");
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(MAX_SLEEP) => self.ensure_certificate()?,
                    req = requests.recv() => match req {
                        Some(reply) => {
                            let _ = reply.send(RenewOutcome {
                                ok: false,
                                message: "acme is disabled (SNIKKET_TWEAK_ACME=0)".into(),
                            });
                        }
                        None => return Ok(()),
                    },
                }
            }
        }
        if self.wait_for_http {
            let url = format!("http://{}/", self.names[0]);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ok = crate::wait::wait_for_http(&url) => if !ok {
                    tracing::warn!(%url, "domain did not answer on http; trying anyway");
                }
            }
        }
        let mut retry_at: Option<i64> = None;
        loop {
            if let Err(e) = self.ensure_certificate() {
                tracing::error!(error = %e, "installing a self-signed certificate");
            }
            let due = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                d = self.next_due() => d,
            };
            let next = retry_at.unwrap_or(due);
            self.update(|s| s.next_attempt = next);
            let wait = Duration::from_secs(u64::try_from(next - now()).unwrap_or(0)).min(MAX_SLEEP);
            let mut reply: Option<RenewRequest> = None;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {
                    if now() < next {
                        continue;
                    }
                }
                req = requests.recv() => match req {
                    Some(r) => reply = Some(r),
                    None => return Ok(()),
                },
            }
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.attempt() => r,
            };
            // (An attempt cancelled by shutdown leaves no challenge files; see `acme::issue`.)
            retry_at = match &outcome {
                Ok(_) => None,
                Err(e) => {
                    let failures = self.status().failures;
                    Some(now() + retry_delay(failures, e.is_soft()).as_secs() as i64)
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(match outcome {
                    Ok(v) => RenewOutcome {
                        ok: true,
                        message: format!("certificate installed (version {v})"),
                    },
                    Err(e) => RenewOutcome {
                        ok: false,
                        message: e.to_string(),
                    },
                });
            }
        }
    }
}

/// Delay before retry number `failures` (1-based): soft errors get up to three quick retries at
/// 15–44 s like Snikket's script; otherwise exponential backoff from a minute to six hours,
/// with ±25 % jitter so that many installs do not hit the CA in step.
pub fn retry_delay(failures: u32, soft: bool) -> Duration {
    if soft && failures <= 3 {
        return Duration::from_secs(15 + rand::random::<u64>() % 30);
    }
    let exp = failures.saturating_sub(1).min(20);
    let base = BACKOFF_BASE_SECS
        .saturating_mul(1u64 << exp)
        .min(BACKOFF_MAX_SECS);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(base as f64 * jitter)
}

/// Let's Encrypt's production and staging directories.
pub const LE_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--staging`, `--test-cert`).
pub const LE_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Interprets the certbot options Snikket users set (`SNIKKET_CERTBOT_OPTIONS`): `--staging` and
/// `--test-cert` switch Let's Encrypt production to staging (an explicit directory URL wins);
/// everything else cannot apply here and is reported back. ECDSA P-256 keys are always used.
pub fn apply_certbot_options(directory_url: &str, options: &[String]) -> (String, Vec<String>) {
    let mut url = directory_url.to_string();
    let mut notes = Vec::new();
    let mut iter = options.iter().peekable();
    while let Some(opt) = iter.next() {
        match opt.as_str() {
            "--staging" | "--test-cert" => {
                if url == LE_PRODUCTION {
                    url = LE_STAGING.to_string();
                }
            }
            "--key-type" | "--rsa-key-size" => {
                let value = iter.next().map(String::as_str).unwrap_or("");
                if !(opt == "--key-type" && value == "ecdsa") {
                    notes.push(format!("{opt} {value} ignored: keys are ECDSA P-256"));
                }
            }
            o if o.starts_with("--key-type=ecdsa") => {}
            o => notes.push(format!("{o} ignored: not supported")),
        }
    }
    (url, notes)
}

/// Splits a PEM chain into the leaf and the rest.
pub fn split_chain(chain: &str) -> Option<(String, String)> {
    const END: &str = "-----END CERTIFICATE-----";
    let idx = chain.find(END)? + END.len();
    let cert = format!("{}\n", chain[..idx].trim_start());
    let rest = chain[idx..].trim_start().to_string();
    Some((cert, rest))
}

fn directory_key(url: &str) -> String {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn remove_if_exists(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing file"),
    }
}

/// Current Unix time in seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(nb: i64, na: i64, self_signed: bool) -> Installed {
        Installed {
            fullchain_pem: String::new(),
            key_pem: String::new(),
            leaf_der: Vec::new(),
            not_before: nb,
            not_after: na,
            names: Vec::new(),
            issuer: String::new(),
            self_signed,
        }
    }

    #[test]
    fn due_is_two_thirds_of_lifetime_or_earlier_ari() {
        let day = 86400;
        assert_eq!(Manager::due(None, None), 0);
        assert_eq!(Manager::due(Some(&installed(0, 90 * day, true)), None), 0);
        assert_eq!(
            Manager::due(Some(&installed(0, 90 * day, false)), None),
            60 * day
        );
        assert_eq!(
            Manager::due(Some(&installed(0, 90 * day, false)), Some(10 * day)),
            10 * day
        );
        assert_eq!(
            Manager::due(Some(&installed(0, 90 * day, false)), Some(80 * day)),
            60 * day
        );
    }

    #[test]
    fn retry_delays_are_bounded_with_jitter() {
        for failures in 1..=3 {
            let d = retry_delay(failures, true).as_secs();
            assert!((15..45).contains(&d), "{d}");
        }
        for _ in 0..50 {
            let first = retry_delay(1, false).as_secs_f64();
            assert!((45.0..=75.0).contains(&first), "{first}");
            let huge = retry_delay(40, false).as_secs_f64();
            assert!(huge <= 6.0 * 3600.0 * 1.25 + 1.0, "{huge}");
        }
        assert!(retry_delay(4, true) >= Duration::from_secs(45));
    }

    #[test]
    fn certbot_options_are_interpreted() {
        let opts = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let (url, notes) = apply_certbot_options(LE_PRODUCTION, &opts("--staging"));
        assert_eq!(url, LE_STAGING);
        assert!(notes.is_empty());
        let (url, _) = apply_certbot_options("https://ca.test/dir", &opts("--test-cert"));
        assert_eq!(url, "https://ca.test/dir");
        let (_, notes) = apply_certbot_options(LE_PRODUCTION, &opts("--key-type ecdsa"));
        assert!(notes.is_empty());
        let (_, notes) = apply_certbot_options(
            LE_PRODUCTION,
            &opts("--key-type rsa --rsa-key-size 4096 --foo"),
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn splits_leaf_from_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let (leaf, rest) = split_chain(chain).unwrap();
        assert_eq!(
            leaf,
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            rest,
            "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
        assert!(split_chain("garbage").is_none());
    }

    #[test]
    fn soft_errors_match_snikket_script() {
        assert!(crate::error::is_soft_detail(
            "DNS problem: networking error looking up A"
        ));
        assert!(crate::error::is_soft_detail("x\nService busy; retry later"));
        assert!(!crate::error::is_soft_detail(
            "Invalid response from http://x: 404"
        ));
    }
}
