//! Client connections driven by a third-party client (slixmpp): invite registration, SCRAM
//! logins, subscriptions, chat, offline delivery, spoofing, and adversarial input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use snikket_testkit::{free_port, wait_for_port, Child, TestCa};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_snikket-server");
const DOMAIN: &str = "chat.test";
const PYTHON: &str = "/usr/bin/python3";

struct Server {
    _child: Child,
    data: tempfile::TempDir,
    port: u16,
    tls_port: u16,
    ca: PathBuf,
}

fn base_env(cmd: &mut Command, data: &Path) {
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SNIKKET_DOMAIN", DOMAIN)
        .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
        .env("SNIKKET_TWEAK_DATA_DIR", data)
        .env("SNIKKET_LOGLEVEL", "debug");
}

fn start() -> Server {
    let data = snikket_testkit::temp_dir();
    let ca = TestCa::new();
    let live = data.path().join("letsencrypt/live").join(DOMAIN);
    ca.write_live_dir(&live, &[DOMAIN, "groups.chat.test", "share.chat.test"]);
    let ca_path = data.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let port = free_port();
    let tls_port = free_port();
    let http_port = free_port();
    let mut cmd = Command::new(BIN);
    base_env(&mut cmd, data.path());
    cmd.env("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1")
        .env("SNIKKET_TWEAK_C2S_PORT", port.to_string())
        .env("SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT", tls_port.to_string())
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1")
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", http_port.to_string())
        .env("SNIKKET_TWEAK_SERVER_GRPC_PORT", free_port().to_string())
        .env("SNIKKET_MAX_USER_CLIENTS", "3");
    let child = Child::spawn("snikket-server", cmd);
    wait_for_port(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(90),
    );
    Server {
        _child: child,
        data,
        port,
        tls_port,
        ca: ca_path,
    }
}

impl Server {
    fn invite(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        base_env(&mut cmd, self.data.path());
        let out = cmd.arg("create-invite").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let link = text
            .trim()
            .strip_prefix("Your invite link: ")
            .unwrap()
            .to_string();
        link.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    }

    fn client(&self, scenario: &str, args: &[&str]) -> (bool, String) {
        assert!(
            Path::new(PYTHON).exists()
                && Command::new(PYTHON)
                    .args(["-c", "import slixmpp"])
                    .status()
                    .unwrap()
                    .success(),
            "slixmpp is missing: apt-get install python3-slixmpp"
        );
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/xmpp_client.py");
        let port = self.port.to_string();
        let out = Command::new(PYTHON)
            .arg(script)
            .arg(scenario)
            .args([
                "--port",
                &port,
                "--ca",
                self.ca.to_str().unwrap(),
                "--domain",
                DOMAIN,
            ])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), format!("{stdout}\n{stderr}"))
    }

    fn register(&self, user: &str, password: &str, token: &str) -> (bool, String) {
        self.client(
            "register",
            &["--user", user, "--password", password, "--token", token],
        )
    }
}

#[test]
fn invite_registration_rules() {
    let s = start();
    let token = s.invite(&["--admin", "--group", "default"]);
    // No token, a guessed token, a short password: refused with Snikket's texts.
    let (ok, out) = s.client(
        "register",
        &[
            "--user",
            "eve",
            "--password",
            "long enough pw",
            "--expect",
            "x",
        ],
    );
    assert!(
        !ok && out
            .contains("not-acceptable Registration on this server is through invitation only"),
        "{out}"
    );
    let (ok, out) = s.register("eve", "long enough pw", "AAAAAAAAAAAAAAAAAAAAAAAA");
    assert!(
        !ok && out.contains("forbidden The invite token is invalid or expired"),
        "{out}"
    );
    let (ok, out) = s.register("alice", "short", &token);
    assert!(!ok && out.contains("not-acceptable"), "{out}");
    let (ok, out) = s.register("alice", "alice-password-1", &token);
    assert!(
        !ok && out.contains("not-acceptable"),
        "password containing the username: {out}"
    );
    // The real thing, then the token is used up.
    let (ok, out) = s.register("alice", "correct horse battery", &token);
    assert!(ok, "{out}");
    let (ok, out) = s.register("mallory", "correct horse battery", &token);
    assert!(
        !ok && out.contains("forbidden"),
        "single-use token reused: {out}"
    );
    // A taken name with a fresh invite.
    let token2 = s.invite(&[]);
    let (ok, out) = s.register("Alice", "correct horse battery", &token2);
    assert!(!ok && out.contains("conflict"), "{out}");
}

#[test]
fn login_with_each_scram_variant_and_direct_tls() {
    let s = start();
    let token = s.invite(&[]);
    assert!(s.register("bob", "correct horse battery", &token).0);
    for mech in ["SCRAM-SHA-1", "SCRAM-SHA-256"] {
        let (ok, out) = s.client(
            "login",
            &[
                "--user",
                "bob",
                "--password",
                "correct horse battery",
                "--mech",
                mech,
            ],
        );
        assert!(ok && out.contains("OK logged in"), "{mech}: {out}");
    }
    let (ok, out) = s.client(
        "login",
        &[
            "--user",
            "bob",
            "--password",
            "wrong password!!",
            "--timeout",
            "10",
        ],
    );
    assert!(!ok && out.contains("auth failed"), "{out}");
    let port = s.tls_port.to_string();
    let (ok, out) = s.client(
        "login",
        &[
            "--user",
            "bob",
            "--password",
            "correct horse battery",
            "--direct-tls",
            "--port",
            &port,
        ],
    );
    assert!(ok, "direct TLS: {out}");
}

#[test]
fn two_users_subscribe_chat_and_get_offline_messages() {
    let s = start();
    let t1 = s.invite(&[]);
    let t2 = s.invite(&[]);
    assert!(s.register("carol", "correct horse battery", &t1).0);
    assert!(s.register("dave", "staple battery horse", &t2).0);
    let (ok, out) = s.client(
        "chat",
        &[
            "--user",
            "carol",
            "--password",
            "correct horse battery",
            "--user2",
            "dave",
            "--password2",
            "staple battery horse",
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn carbons_circles_session_limit_and_limited_users() {
    let s = start();
    let t1 = s.invite(&["--group", "default"]);
    let t2 = s.invite(&["--group", "default"]);
    let t3 = s.invite(&["--role", "limited"]);
    assert!(s.register("fern", "correct horse battery", &t1).0);
    assert!(s.register("gus", "staple battery horse", &t2).0);
    assert!(s.register("hal", "limited user password", &t3).0);
    // Circle members are mutual contacts at login, grouped under the circle name.
    let (ok, out) = s.client(
        "circle",
        &[
            "--user",
            "fern",
            "--password",
            "correct horse battery",
            "--user2",
            "gus",
            "--group",
            DOMAIN,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = s.client(
        "carbons",
        &[
            "--user",
            "fern",
            "--password",
            "correct horse battery",
            "--user2",
            "gus",
            "--password2",
            "staple battery horse",
        ],
    );
    assert!(ok, "{out}");
    // SNIKKET_MAX_USER_CLIENTS=3 in this server: the 4th session is closed.
    let (ok, out) = s.client(
        "limit",
        &[
            "--user",
            "gus",
            "--password",
            "staple battery horse",
            "--count",
            "3",
        ],
    );
    assert!(
        ok && out.contains("Too many active connections to this account"),
        "{out}"
    );
    // Limited users may not reach other domains; normal users get the federation error.
    let (ok, out) = s.client(
        "remote",
        &["--user", "hal", "--password", "limited user password"],
    );
    assert!(
        ok && out.contains("policy-violation Communication with remote domains is not permitted"),
        "{out}"
    );
    let (ok, out) = s.client(
        "remote",
        &["--user", "fern", "--password", "correct horse battery"],
    );
    assert!(ok && out.contains("remote-server-not-found"), "{out}");
}

#[test]
fn archive_query_with_paging() {
    let s = start();
    let t1 = s.invite(&[]);
    let t2 = s.invite(&[]);
    assert!(s.register("ivy", "correct horse battery", &t1).0);
    assert!(s.register("jon", "staple battery horse", &t2).0);
    let (ok, out) = s.client(
        "mam",
        &[
            "--user",
            "ivy",
            "--password",
            "correct horse battery",
            "--user2",
            "jon",
            "--password2",
            "staple battery horse",
        ],
    );
    assert!(
        ok && out.contains("OK archive returned 5 messages in 3 pages"),
        "{out}"
    );
}

#[test]
fn stream_management_resumes_after_the_tcp_connection_dies() {
    let s = start();
    let t1 = s.invite(&[]);
    let t2 = s.invite(&[]);
    assert!(s.register("kim", "correct horse battery", &t1).0);
    assert!(s.register("lou", "staple battery horse", &t2).0);
    let (ok, out) = s.client(
        "resume",
        &[
            "--user",
            "kim",
            "--password",
            "correct horse battery",
            "--user2",
            "lou",
            "--password2",
            "staple battery horse",
        ],
    );
    assert!(ok && out.contains("OK resumed without loss"), "{out}");
}

#[test]
fn turn_credentials_by_external_service_discovery() {
    use base64::Engine;
    use hmac::Mac;
    let s = start();
    let t = s.invite(&[]);
    assert!(s.register("max", "correct horse battery", &t).0);
    let (ok, out) = s.client(
        "extdisco",
        &["--user", "max", "--password", "correct horse battery"],
    );
    assert!(ok, "{out}");
    let line = out.lines().find(|l| l.starts_with("TURN ")).unwrap();
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts[1], DOMAIN);
    assert_eq!(parts[2], "3478");
    let expiry: i64 = parts[3].parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        expiry > now && expiry <= now + 86_400 + 5,
        "expiry {expiry}"
    );
    let secret =
        std::fs::read_to_string(s.data.path().join("prosody/turn-auth-secret-v2")).unwrap();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.trim().as_bytes()).unwrap();
    mac.update(parts[3].as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(
        parts[4], want,
        "password is the TURN REST HMAC of the shared secret"
    );
}

fn raw(port: u16, data: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(data);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(16).any(|w| w == b"</stream:stream>") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='chat.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

#[test]
fn adversarial_input_gets_stream_errors_and_the_server_keeps_serving() {
    let s = start();
    // Stanzas before TLS.
    let out = raw(
        s.port,
        format!("{HEADER}<message to='x@chat.test'><body>hi</body></message>").as_bytes(),
    );
    assert!(out.contains("policy-violation"), "{out}");
    // A DTD / entity bomb.
    let out = raw(
        s.port,
        b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><stream:stream>",
    );
    assert!(
        out.contains("restricted-xml") || out.contains("not-well-formed"),
        "{out}"
    );
    // Garbage bytes.
    let out = raw(s.port, b"\x00\x01\x02garbage<<<>>>");
    assert!(
        out.contains("not-well-formed") || out.contains("stream:error"),
        "{out}"
    );
    // Wrong domain.
    let out = raw(s.port, HEADER.replace("chat.test", "other.test").as_bytes());
    assert!(out.contains("host-unknown"), "{out}");
    // Oversize pre-TLS element.
    let big = format!(
        "{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' a='{}'/>",
        "x".repeat(100_000)
    );
    let out = raw(s.port, big.as_bytes());
    assert!(out.contains("stream:error"), "{out}");
    // Still serving.
    let token = s.invite(&[]);
    assert!(s.register("erin", "correct horse battery", &token).0);
}
