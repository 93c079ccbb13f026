//! The real `snikket-cert-manager` binary against Pebble (Debian package `pebble`) on loopback:
//! issuance for the three names, a failing challenge, the `renew`/`status` commands, scheduled
//! renewal with key reuse, key rotation, adopting a certbot layout, ACME off, crash recovery.
//!
//! Pebble resolves names through `pebble-challtestsrv` (same package), which answers every A
//! query with 127.0.0.1; the HTTP-01 files are served from the challenge directory by a small
//! HTTP server in this test, standing in for the web proxy.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should abort the test

use snikket_testkit::process::Child;
use snikket_testkit::{free_port, temp_dir, wait_for_port, TestCa};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAIN: &str = "chat.example.com";
const NAMES: [&str; 3] = [
    "chat.example.com",
    "groups.chat.example.com",
    "share.chat.example.com",
];
const BIN: &str = env!("CARGO_BIN_EXE_snikket-cert-manager");

fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{tool}` not found: install the Debian package `pebble` (apt-get install -y pebble)");
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Serves `/.well-known/acme-challenge/<token>` from a directory, or 404 while `serve` is false.
struct ChallengeServer {
    serve: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    port: u16,
}

impl ChallengeServer {
    fn start(dir: PathBuf, serve: bool) -> ChallengeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let flag = Arc::new(AtomicBool::new(serve));
        let hits = Arc::new(AtomicUsize::new(0));
        let (f, h) = (flag.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let req = String::from_utf8_lossy(&buf);
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let token = path.strip_prefix("/.well-known/acme-challenge/");
                let body = match token {
                    Some(t) if f.load(Ordering::SeqCst) && !t.contains('/') && !t.is_empty() => {
                        std::fs::read(dir.join(t)).ok()
                    }
                    _ => None,
                };
                let resp = match body {
                    Some(b) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&b);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&resp);
            }
        });
        ChallengeServer {
            serve: flag,
            hits,
            port,
        }
    }
}

/// Records whole HTTP requests (for the error report DSN) and answers 200.
fn start_recorder() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .and_then(|v| v.trim().parse::<usize>().ok())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            store
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

struct Pebble {
    _pebble: Child,
    _dns: Child,
    directory: String,
    ca_bundle: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_pebble(http_port: u16, validity_secs: Option<u64>) -> Pebble {
    let pebble_bin = require("pebble");
    let dns_bin = require("pebble-challtestsrv");
    let dir = temp_dir();
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.path().join("cert.pem"), &leaf.fullchain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
    let ca_bundle = dir.path().join("ca.pem");
    std::fs::write(&ca_bundle, ca.cert_pem()).unwrap();

    let dns_port = free_port();
    let dns_mgmt = free_port();
    let mut dns = Command::new(dns_bin);
    dns.args([
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
        "-dns01",
        &format!("127.0.0.1:{dns_port}"),
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-management",
        &format!("127.0.0.1:{dns_mgmt}"),
    ]);
    dns.stdout(std::process::Stdio::null());
    let dns = Child::spawn("pebble-challtestsrv", dns);
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], dns_mgmt)),
        Duration::from_secs(20),
    );
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], dns_port)),
        Duration::from_secs(20),
    );

    let port = free_port();
    let mgmt = free_port();
    let mut cfg = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    if let Some(v) = validity_secs {
        cfg["pebble"]["certificateValidityPeriod"] = serde_json::json!(v);
    }
    let cfg_path = dir.path().join("pebble.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let mut cmd = Command::new(pebble_bin);
    cmd.arg("-config")
        .arg(&cfg_path)
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{dns_port}"))
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(std::process::Stdio::null());
    let pebble = Child::spawn("pebble", cmd);
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    );
    Pebble {
        _pebble: pebble,
        _dns: dns,
        directory: format!("https://127.0.0.1:{port}/dir"),
        ca_bundle,
        _dir: dir,
    }
}

/// One cert-manager installation: data dir, challenge dir, environment.
struct Install {
    dir: tempfile::TempDir,
    grpc_port: u16,
    extra: Vec<(String, String)>,
}

impl Install {
    fn new(extra: &[(&str, &str)]) -> Install {
        Install {
            dir: temp_dir(),
            grpc_port: free_port(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn le(&self) -> PathBuf {
        self.data().join("letsencrypt")
    }

    fn live(&self) -> PathBuf {
        self.le().join("live").join(DOMAIN)
    }

    fn archive(&self) -> PathBuf {
        self.le().join("archive").join(DOMAIN)
    }

    fn challenges(&self) -> PathBuf {
        self.dir.path().join("acme-challenge")
    }

    fn command(&self, pebble: Option<&Pebble>) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SNIKKET_DOMAIN", DOMAIN)
            .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
            .env("SNIKKET_TWEAK_DATA_DIR", self.data())
            .env("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1")
            .env("SNIKKET_TWEAK_CERTS_GRPC_PORT", self.grpc_port.to_string())
            .env("SNIKKET_TWEAK_ACME_CHALLENGE_DIR", self.challenges())
            .env("SNIKKET_LOGLEVEL", "debug");
        if let Some(p) = pebble {
            cmd.env("SNIKKET_TWEAK_ACME_DIRECTORY_URL", &p.directory)
                .env("SNIKKET_TWEAK_ACME_CA_BUNDLE", &p.ca_bundle);
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    fn start(&self, pebble: Option<&Pebble>) -> Child {
        let child = Child::spawn("snikket-cert-manager", self.command(pebble));
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], self.grpc_port)),
            Duration::from_secs(30),
        );
        child
    }

    /// Runs a sub-command; returns (success, stdout).
    fn cli(&self, pebble: Option<&Pebble>, sub: &str) -> (bool, String) {
        let out = self.command(pebble).arg(sub).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{sub}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.success(), stdout)
    }

    fn issuer(&self) -> Option<String> {
        let pem = std::fs::read(self.live().join("fullchain.pem")).ok()?;
        let mut r = pem.as_slice();
        let der = rustls_pemfile::certs(&mut r).next()?.ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some(cert.issuer().to_string())
    }

    fn leaf(&self) -> (Vec<String>, i64, String) {
        let pem = std::fs::read(self.live().join("fullchain.pem")).unwrap();
        let key = std::fs::read(self.live().join("privkey.pem")).unwrap();
        snikket_runtime::tls::certified_key(&pem, &key).expect("live pair matches");
        let mut r = pem.as_slice();
        let der = rustls_pemfile::certs(&mut r).next().unwrap().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_string());
                }
            }
        }
        names.sort();
        (
            names,
            cert.validity().not_after.timestamp(),
            cert.issuer().to_string(),
        )
    }

    fn is_real(&self) -> bool {
        self.issuer().is_some_and(|i| i.contains("Pebble"))
            && !self.live().join("self-signed").exists()
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn sorted_names() -> Vec<String> {
    let mut v: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn failing_challenge_then_renew_command_then_scheduled_renewal_with_key_reuse() {
    let install = Install::new(&[]);
    let http = ChallengeServer::start(install.challenges(), false);
    let pebble = start_pebble(http.port, Some(30));
    let _daemon = install.start(Some(&pebble));

    // The bootstrap certificate is there at once, marked, for all three names.
    assert!(install.live().join("self-signed").exists());
    let (names, not_after, issuer) = install.leaf();
    assert_eq!(names, sorted_names());
    assert!(issuer.contains("Snikket self-signed"), "{issuer}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(not_after < now + 8 * 86400, "bootstrap is short-lived");

    // The proxy does not serve the challenge: the attempt fails, visibly.
    let has_errors = install.le().join("has-errors");
    wait_until("has-errors", Duration::from_secs(90), || {
        has_errors.exists()
    });
    assert!(
        http.hits.load(Ordering::SeqCst) > 0,
        "pebble tried to validate"
    );
    let log = String::from_utf8_lossy(&read(&install.le().join("errors.log"))).into_owned();
    assert!(log.contains("chat.example.com"), "errors.log: {log}");
    assert!(log.contains("404"), "errors.log: {log}");
    assert!(install.live().join("self-signed").exists());
    let (ok, status) = install.cli(Some(&pebble), "status");
    assert!(ok);
    assert!(status.contains("self-signed: true"), "{status}");
    assert!(!status.contains("last error: -"), "{status}");
    assert!(
        !status.contains("next attempt: -"),
        "a retry is planned: {status}"
    );

    // The proxy serves the files now; a forced attempt succeeds and replaces the bootstrap.
    http.serve.store(true, Ordering::SeqCst);
    let (ok, out) = install.cli(Some(&pebble), "renew");
    assert!(ok, "renew failed: {out}");
    assert!(out.starts_with("OK"), "{out}");
    assert!(install.is_real(), "issuer {:?}", install.issuer());
    let (names, _, _) = install.leaf();
    assert_eq!(names, sorted_names());
    assert!(!has_errors.exists());
    assert!(!install.le().join("errors.log").exists());
    let leftovers: Vec<_> = std::fs::read_dir(install.challenges())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "challenge files left: {leftovers:?}");
    for kind in ["cert", "chain", "fullchain", "privkey"] {
        let link = std::fs::read_link(install.live().join(format!("{kind}.pem"))).unwrap();
        assert_eq!(
            link,
            PathBuf::from(format!("../../archive/{DOMAIN}/{kind}1.pem"))
        );
    }
    let mode = std::fs::metadata(install.archive().join("privkey1.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o037,
        0,
        "private key is not group-writable or world-readable"
    );
    assert!(install
        .le()
        .join("renewal")
        .join(format!("{DOMAIN}.conf"))
        .exists());
    let accounts = install.le().join("accounts").join("snikket");
    assert_eq!(std::fs::read_dir(&accounts).unwrap().count(), 1);

    // 30 s certificates are renewed at 2/3 of their lifetime, with the same key.
    wait_until("scheduled renewal", Duration::from_secs(120), || {
        install.archive().join("fullchain2.pem").exists()
            && std::fs::read_link(install.live().join("fullchain.pem"))
                .is_ok_and(|l| l.ends_with("fullchain2.pem"))
    });
    assert_eq!(
        read(&install.archive().join("privkey1.pem")),
        read(&install.archive().join("privkey2.pem")),
        "key reused"
    );
    assert_ne!(
        read(&install.archive().join("cert1.pem")),
        read(&install.archive().join("cert2.pem"))
    );
    install.leaf();
}

#[test]
fn no_reuse_key_rotates_the_key() {
    let install = Install::new(&[("SNIKKET_CERTBOT_KEY_OPTIONS", "--no-reuse-key")]);
    let http = ChallengeServer::start(install.challenges(), true);
    let pebble = start_pebble(http.port, None);
    let _daemon = install.start(Some(&pebble));
    wait_until("first certificate", Duration::from_secs(90), || {
        install.is_real()
    });
    let (ok, out) = install.cli(Some(&pebble), "renew");
    assert!(ok, "{out}");
    assert!(install.archive().join("privkey2.pem").exists());
    assert_ne!(
        read(&install.archive().join("privkey1.pem")),
        read(&install.archive().join("privkey2.pem")),
        "key rotated"
    );
    install.leaf();
}

/// A certbot-issued lineage (symlinks into archive/, renewal conf) is kept while valid, then
/// renewed in place with its key.
#[test]
fn existing_certbot_layout_is_adopted() {
    let install = Install::new(&[]);
    let ca = TestCa::new();
    let leaf = ca.leaf(&NAMES);
    std::fs::create_dir_all(install.archive()).unwrap();
    std::fs::create_dir_all(install.live()).unwrap();
    std::fs::create_dir_all(install.le().join("renewal")).unwrap();
    for (kind, data) in [
        ("cert", &leaf.cert_pem),
        ("chain", &leaf.chain_pem),
        ("fullchain", &leaf.fullchain_pem),
        ("privkey", &leaf.key_pem),
    ] {
        std::fs::write(install.archive().join(format!("{kind}1.pem")), data).unwrap();
        std::os::unix::fs::symlink(
            format!("../../archive/{DOMAIN}/{kind}1.pem"),
            install.live().join(format!("{kind}.pem")),
        )
        .unwrap();
    }
    let conf = install.le().join("renewal").join(format!("{DOMAIN}.conf"));
    std::fs::write(&conf, "# certbot's own\nversion = 2.1.0\n").unwrap();

    let http = ChallengeServer::start(install.challenges(), true);
    let pebble = start_pebble(http.port, None);
    // A certbot account whose key cannot be used: a new account is registered instead.
    let broken = certbot_server_dir(&install, &pebble).join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("regr.json"),
        r#"{"body": {}, "uri": "https://127.0.0.1:1/my-account/1"}"#,
    )
    .unwrap();
    std::fs::write(
        broken.join("private_key.json"),
        r#"{"kty": "RSA", "n": "AQAB"}"#,
    )
    .unwrap();
    let _daemon = install.start(Some(&pebble));
    let (ok, status) = install.cli(Some(&pebble), "status");
    assert!(ok);
    assert!(status.contains("self-signed: false"), "{status}");
    // Nothing is due: the lineage stays as it is.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!install.archive().join("cert2.pem").exists());
    assert_eq!(
        std::fs::read_link(install.live().join("privkey.pem")).unwrap(),
        PathBuf::from(format!("../../archive/{DOMAIN}/privkey1.pem"))
    );
    assert!(!install.live().join("self-signed").exists());

    let (ok, out) = install.cli(Some(&pebble), "renew");
    assert!(ok, "{out}");
    assert!(install.is_real());
    assert_eq!(
        read(&install.archive().join("privkey2.pem")),
        leaf.key_pem.as_bytes(),
        "adopted key reused"
    );
    assert_eq!(read(&conf), b"# certbot's own\nversion = 2.1.0\n");
    install.leaf();
}

/// `SNIKKET_TWEAK_ACME=0`: a long-lived self-signed certificate, and no connection to any CA.
#[test]
fn acme_off_keeps_self_signed_and_never_contacts_a_ca() {
    let ca_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ca_listener.set_nonblocking(true).unwrap();
    let port = ca_listener.local_addr().unwrap().port();
    let url = format!("https://127.0.0.1:{port}/dir");
    let install = Install::new(&[
        ("SNIKKET_TWEAK_ACME", "0"),
        ("SNIKKET_TWEAK_ACME_DIRECTORY_URL", url.as_str()),
    ]);
    let daemon = install.start(None);
    let (names, not_after, issuer) = install.leaf();
    assert_eq!(names, sorted_names());
    assert!(issuer.contains("self-signed"), "{issuer}");
    // The image's HEALTHCHECK: quiet while the daemon answers with a certificate in place.
    assert_eq!(install.cli(None, "healthcheck"), (true, String::new()));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(not_after > now + 365 * 86400, "long-lived");
    let (ok, out) = install.cli(None, "renew");
    assert!(!ok, "renew must report failure with acme off: {out}");
    assert!(out.contains("acme is disabled"), "{out}");
    assert!(
        ca_listener.accept().is_err(),
        "nothing may connect to the CA"
    );
    // The gRPC API refuses callers without the shared secret.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        use snikket_rpc::snikket::certs::v1 as pb;
        let mut client = pb::certs_client::CertsClient::connect(format!(
            "http://127.0.0.1:{}",
            install.grpc_port
        ))
        .await
        .unwrap();
        client
            .get_cert_status(pb::GetCertStatusRequest {})
            .await
            .unwrap_err()
            .code()
    });
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(!install.le().join("has-errors").exists());
    drop(daemon);
    let (ok, out) = install.cli(None, "healthcheck");
    assert!(!ok);
    assert!(out.contains("certificate manager"), "{out}");
}

/// A crash between swapping the key link and the chain link leaves live/ pointing at two
/// versions; the next start repairs it before anything else.
#[test]
fn restart_after_crash_between_key_and_chain_repairs_live_pair() {
    let install = Install::new(&[("SNIKKET_TWEAK_ACME", "0")]);
    let ca = TestCa::new();
    std::fs::create_dir_all(install.archive()).unwrap();
    std::fs::create_dir_all(install.live()).unwrap();
    for v in 1..=2 {
        let leaf = ca.leaf(&NAMES);
        for (kind, data) in [
            ("cert", &leaf.cert_pem),
            ("chain", &leaf.chain_pem),
            ("fullchain", &leaf.fullchain_pem),
            ("privkey", &leaf.key_pem),
        ] {
            std::fs::write(install.archive().join(format!("{kind}{v}.pem")), data).unwrap();
        }
    }
    // Key already switched to version 2, chain still at version 1.
    for (kind, v) in [("cert", 2), ("chain", 2), ("privkey", 2), ("fullchain", 1)] {
        std::os::unix::fs::symlink(
            format!("../../archive/{DOMAIN}/{kind}{v}.pem"),
            install.live().join(format!("{kind}.pem")),
        )
        .unwrap();
    }
    let pem = read(&install.live().join("fullchain.pem"));
    let key = read(&install.live().join("privkey.pem"));
    assert!(
        snikket_runtime::tls::certified_key(&pem, &key).is_err(),
        "setup: mismatched"
    );

    let _daemon = install.start(None);
    install.leaf(); // panics unless the pair matches
    for kind in ["cert", "chain", "fullchain", "privkey"] {
        let link = std::fs::read_link(install.live().join(format!("{kind}.pem"))).unwrap();
        assert_eq!(
            link,
            PathBuf::from(format!("../../archive/{DOMAIN}/{kind}2.pem"))
        );
    }
    assert!(
        !install.live().join("self-signed").exists(),
        "not replaced by self-signed"
    );
}

/// After a failed attempt the daemon retries by itself (backoff with jitter, 45–75 s for the
/// first retry) and clears `has-errors` when it succeeds.
#[test]
fn failed_attempt_is_retried_automatically() {
    let (report_port, reports) = start_recorder();
    let dsn = format!("http://testkey@127.0.0.1:{report_port}/42");
    let install = Install::new(&[("REPORT_DSN", dsn.as_str())]);
    let http = ChallengeServer::start(install.challenges(), false);
    let pebble = start_pebble(http.port, None);
    let _daemon = install.start(Some(&pebble));
    let has_errors = install.le().join("has-errors");
    wait_until("has-errors", Duration::from_secs(90), || {
        has_errors.exists()
    });
    eprintln!(
        "errors.log:\n{}",
        String::from_utf8_lossy(&read(&install.le().join("errors.log")))
    );
    // The failure was reported to the DSN like report-error.sh does.
    wait_until("error report", Duration::from_secs(30), || {
        !reports.lock().unwrap().is_empty()
    });
    let report = reports.lock().unwrap()[0].clone();
    assert!(report.starts_with("POST /api/42/store/ "), "{report}");
    assert!(
        report.to_ascii_lowercase().contains("sentry_key=testkey"),
        "{report}"
    );
    assert!(report.contains("Certificate issuance failure"), "{report}");
    assert!(report.contains("returned 404"), "{report}");
    http.serve.store(true, Ordering::SeqCst);
    wait_until("automatic retry", Duration::from_secs(180), || {
        install.is_real() && !has_errors.exists()
    });
    install.leaf();
}

/// SIGKILL the daemon at several points during key-rotating renewals; after every restart the
/// live files are a matching pair again (the restart repairs before it listens).
#[test]
fn sigkill_during_renewals_never_leaves_a_mismatched_pair_after_restart() {
    let install = Install::new(&[("SNIKKET_CERTBOT_KEY_OPTIONS", "--no-reuse-key")]);
    let http = ChallengeServer::start(install.challenges(), true);
    let pebble = start_pebble(http.port, None);
    let mut daemon = install.start(Some(&pebble));
    wait_until("first certificate", Duration::from_secs(90), || {
        install.is_real()
    });
    for delay_ms in [0u64, 300, 600, 900, 1200, 1500, 2500] {
        let mut renew = install.command(Some(&pebble));
        renew
            .arg("renew")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let renew = Child::spawn("renew", renew);
        std::thread::sleep(Duration::from_millis(delay_ms));
        drop(daemon); // SIGKILL
        drop(renew);
        daemon = install.start(Some(&pebble));
        install.leaf(); // panics unless fullchain.pem and privkey.pem match
        let linked: Vec<_> = ["cert", "chain", "fullchain", "privkey"]
            .iter()
            .map(|k| std::fs::read_link(install.live().join(format!("{k}.pem"))).ok())
            .map(|l| {
                l.and_then(|p| {
                    p.to_str().map(|s| {
                        s.trim_end_matches(".pem")
                            .chars()
                            .rev()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                    })
                })
            })
            .collect();
        assert!(
            linked.iter().all(|v| v.is_some() && *v == linked[0]),
            "live links disagree after kill at {delay_ms} ms: {linked:?}"
        );
    }
    drop(daemon);
    // Kill points are spread over whole attempts; how many finished depends on machine speed.
    eprintln!(
        "archive versions: {:?}",
        std::fs::read_dir(install.archive()).unwrap().count() / 4
    );
}

/// Runs Debian's certbot with its directories inside `install` (the letsencrypt dir is certbot's
/// config dir, as in Snikket's image); returns (success, stdout + stderr).
fn certbot(install: &Install, pebble: &Pebble, args: &[&str]) -> (bool, String) {
    let bin = Path::new("/usr/bin/certbot");
    assert!(
        bin.is_file(),
        "`certbot` not found: install the Debian package `certbot` (apt-get install -y certbot)"
    );
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .arg("--non-interactive")
        .arg("--config-dir")
        .arg(install.le())
        .arg("--work-dir")
        .arg(install.dir.path().join("certbot-work"))
        .arg("--logs-dir")
        .arg(install.dir.path().join("certbot-logs"))
        .env("REQUESTS_CA_BUNDLE", &pebble.ca_bundle)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "certbot {} ({:?}): {text}",
        args.first().unwrap_or(&""),
        started.elapsed()
    );
    (out.status.success(), text)
}

/// Certbot's account directory for `pebble`: `accounts/` + host:port + path of its directory URL.
fn certbot_server_dir(install: &Install, pebble: &Pebble) -> PathBuf {
    install
        .le()
        .join("accounts")
        .join(pebble.directory.strip_prefix("https://").unwrap())
}

/// The certbot account directories for `pebble` (one per account id).
fn certbot_accounts(install: &Install, pebble: &Pebble) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(certbot_server_dir(install, pebble))
        .map(|it| it.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn json_file(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&read(p)).unwrap()
}

/// An install switched over from Snikket's certbot: Debian's certbot registered its (RSA) account
/// and issued the certificate. cert-manager renews with that same account, rolling its key over
/// to P-256, and certbot itself can still use the account and renew afterwards (switching back).
#[test]
fn certbot_account_is_adopted_and_stays_usable_by_certbot() {
    let install = Install::new(&[]);
    std::fs::create_dir_all(install.challenges()).unwrap();
    let webroot = install.dir.path().join("webroot");
    std::fs::create_dir_all(webroot.join(".well-known")).unwrap();
    std::os::unix::fs::symlink(
        install.challenges(),
        webroot.join(".well-known").join("acme-challenge"),
    )
    .unwrap();
    let http = ChallengeServer::start(install.challenges(), true);
    let pebble = start_pebble(http.port, None);

    let mut args = vec![
        "certonly",
        "--agree-tos",
        "--no-eff-email",
        "-m",
        "admin@example.com",
        "--server",
        &pebble.directory,
        "--webroot",
        "-w",
    ];
    let webroot_s = webroot.to_str().unwrap().to_string();
    args.push(&webroot_s);
    args.extend(["--cert-name", DOMAIN]);
    for n in NAMES {
        args.extend(["-d", n]);
    }
    let (ok, out) = certbot(&install, &pebble, &args);
    assert!(ok, "certbot issuance failed: {out}");
    let accounts = certbot_accounts(&install, &pebble);
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let old_dir = accounts[0].clone();
    let old_id = old_dir.file_name().unwrap().to_str().unwrap().to_string();
    let account_url = json_file(&old_dir.join("regr.json"))["uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(json_file(&old_dir.join("private_key.json"))["kty"], "RSA");
    let conf = install.le().join("renewal").join(format!("{DOMAIN}.conf"));
    assert!(String::from_utf8_lossy(&read(&conf)).contains(&format!("account = {old_id}")));
    let first_leaf = read(&install.archive().join("cert1.pem"));

    let daemon = install.start(Some(&pebble));
    let (ok, status) = install.cli(Some(&pebble), "status");
    assert!(ok && status.contains("self-signed: false"), "{status}");
    let (ok, out) = install.cli(Some(&pebble), "renew");
    assert!(ok, "{out}");
    drop(daemon);
    assert!(install.is_real());
    assert_ne!(read(&install.archive().join("cert2.pem")), first_leaf);
    assert_eq!(install.leaf().0, sorted_names());

    // Our stored account is certbot's account (same URL), now with an ECDSA key.
    let ours: Vec<PathBuf> = std::fs::read_dir(install.le().join("accounts").join("snikket"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(
        json_file(&ours[0])["credentials"]["id"].as_str().unwrap(),
        account_url,
        "the certbot account was adopted, not replaced"
    );

    // Certbot's files follow the new key: new id directory, EC JWK, renewal conf pointing at it.
    let accounts = certbot_accounts(&install, &pebble);
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let new_dir = &accounts[0];
    let new_id = new_dir.file_name().unwrap().to_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    let jwk = json_file(&new_dir.join("private_key.json"));
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(
        json_file(&new_dir.join("regr.json"))["uri"]
            .as_str()
            .unwrap(),
        account_url
    );
    let conf_text = String::from_utf8_lossy(&read(&conf)).into_owned();
    assert!(
        conf_text.contains(&format!("account = {new_id}")),
        "{conf_text}"
    );

    // Switching back: certbot loads the rewritten account (its id check is the MD5 of the new
    // public key), the CA accepts its ES256 signature, and it renews the lineage we extended.
    let (ok, out) = certbot(
        &install,
        &pebble,
        &["show_account", "--server", &pebble.directory],
    );
    assert!(ok && out.contains(&account_url), "{out}");
    let (ok, out) = certbot(
        &install,
        &pebble,
        &["renew", "--force-renewal", "--no-random-sleep-on-renew"],
    );
    assert!(ok, "certbot renewal after adoption failed: {out}");
    assert!(install.archive().join("cert3.pem").exists());
    assert_eq!(install.leaf().0, sorted_names());
}
