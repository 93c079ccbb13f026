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
    http_port: u16,
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
    start_with(&[])
}

/// A server with extra environment variables.
fn start_with(extra: &[(&str, &str)]) -> Server {
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
        .env("SNIKKET_TWEAK_S2S_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1")
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", http_port.to_string())
        .env("SNIKKET_TWEAK_SERVER_GRPC_PORT", free_port().to_string())
        .env("SNIKKET_MAX_USER_CLIENTS", "3")
        .envs(extra.iter().copied());
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
        http_port,
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
        (
            out.status.success(),
            format!("{stdout}\n{stderr}\nclient {}", out.status),
        )
    }

    /// Runs a scenario for two users, each given as (name, password).
    fn two_users(&self, scenario: &str, a: (&str, &str), b: (&str, &str)) -> (bool, String) {
        self.client(
            scenario,
            &[
                "--user",
                a.0,
                "--password",
                a.1,
                "--user2",
                b.0,
                "--password2",
                b.1,
            ],
        )
    }

    /// Runs a scenario for three users, each given as (name, password).
    fn three_users(
        &self,
        scenario: &str,
        a: (&str, &str),
        b: (&str, &str),
        c: (&str, &str),
    ) -> (bool, String) {
        self.client(
            scenario,
            &[
                "--user",
                a.0,
                "--password",
                a.1,
                "--user2",
                b.0,
                "--password2",
                b.1,
                "--user3",
                c.0,
                "--password3",
                c.1,
            ],
        )
    }

    fn register(&self, user: &str, password: &str, token: &str) -> (bool, String) {
        // `--token=` keeps a token that starts with '-' (base64url) from looking like an option.
        let token = format!("--token={token}");
        self.client(
            "register",
            &["--user", user, "--password", password, &token],
        )
    }

    /// Registers and fails the test with the client's output if that did not work.
    #[track_caller]
    fn registered(&self, user: &str, password: &str, token: &str) {
        let (ok, out) = self.register(user, password, token);
        assert!(ok, "registering {user} failed:\n{out}");
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
    s.registered("bob", "correct horse battery", &token);
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
    s.registered("carol", "correct horse battery", &t1);
    s.registered("dave", "staple battery horse", &t2);
    let (ok, out) = s.two_users(
        "chat",
        ("carol", "correct horse battery"),
        ("dave", "staple battery horse"),
    );
    assert!(ok, "{out}");
}

#[test]
fn carbons_circles_session_limit_and_limited_users() {
    let s = start();
    let t1 = s.invite(&["--group", "default"]);
    let t2 = s.invite(&["--group", "default"]);
    let t3 = s.invite(&["--role", "limited"]);
    s.registered("fern", "correct horse battery", &t1);
    s.registered("gus", "staple battery horse", &t2);
    s.registered("hal", "limited user password", &t3);
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
    let (ok, out) = s.two_users(
        "carbons",
        ("fern", "correct horse battery"),
        ("gus", "staple battery horse"),
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
    // (`.invalid` never resolves, RFC 6761, so this does not depend on the machine's DNS.)
    let (ok, out) = s.client(
        "remote",
        &[
            "--user",
            "fern",
            "--password",
            "correct horse battery",
            "--to",
            "someone@remote.invalid",
        ],
    );
    assert!(ok && out.contains("remote-server-not-found"), "{out}");
}

#[test]
fn archive_query_with_paging() {
    let s = start();
    let t1 = s.invite(&[]);
    let t2 = s.invite(&[]);
    s.registered("ivy", "correct horse battery", &t1);
    s.registered("jon", "staple battery horse", &t2);
    let (ok, out) = s.two_users(
        "mam",
        ("ivy", "correct horse battery"),
        ("jon", "staple battery horse"),
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
    s.registered("kim", "correct horse battery", &t1);
    s.registered("lou", "staple battery horse", &t2);
    let (ok, out) = s.two_users(
        "resume",
        ("kim", "correct horse battery"),
        ("lou", "staple battery horse"),
    );
    assert!(ok && out.contains("OK resumed without loss"), "{out}");
}

#[test]
fn turn_credentials_by_external_service_discovery() {
    use base64::Engine;
    use hmac::Mac;
    let s = start();
    let t = s.invite(&[]);
    s.registered("max", "correct horse battery", &t);
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
    raw_until(port, data, "</stream:stream>")
}

/// Writes `data` on a fresh plain connection and reads until `end` arrives, EOF or 10 s.
fn raw_until(port: u16, data: &[u8], end: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(data);
    read_until(&mut s, end)
}

/// Reads until `end` arrives, EOF, an error or the stream's read timeout.
fn read_until<R: Read>(r: &mut R, end: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(end.len()).any(|w| w == end.as_bytes()) {
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
    s.registered("erin", "correct horse battery", &token);
}

/// The condition element of the first `<stream:error>` in `out`, if any.
fn stream_error_condition(out: &str) -> Option<&str> {
    let rest = &out[out.find("<stream:error><")? + "<stream:error><".len()..];
    let end = rest.find([' ', '/', '>'])?;
    Some(&rest[..end])
}

/// The condition element inside the first SASL `<failure>` in `out`, if any.
fn sasl_failure_condition(out: &str) -> Option<&str> {
    let rest = &out[out.find("<failure")?..];
    let rest = &rest[rest.find('>')? + 1..];
    let rest = rest.strip_prefix('<')?;
    let end = rest.find([' ', '/', '>'])?;
    Some(&rest[..end])
}

/// A fresh plain connection gets the pre-TLS features (STARTTLS required).
fn assert_serves_starttls(port: u16) {
    let out = raw_until(port, HEADER.as_bytes(), "</features>");
    assert!(
        out.contains("<features") && out.contains("urn:ietf:params:xml:ns:xmpp-tls"),
        "no STARTTLS feature: {out}"
    );
}

#[test]
fn deep_nesting_is_a_policy_violation_and_the_server_keeps_serving() {
    let s = start();
    // Pre-auth streams allow depth 8 (Limits::pre_auth): 8 levels parse as a complete
    // element, which is then refused only because TLS has not been negotiated yet.
    let depth8 = format!("{HEADER}{}{}", "<a>".repeat(8), "</a>".repeat(8));
    let out = raw(s.port, depth8.as_bytes());
    assert_eq!(
        stream_error_condition(&out),
        Some("policy-violation"),
        "{out}"
    );
    assert!(out.contains("Encryption is required"), "{out}");
    // One level more is refused by the parser (policy-violation without the TLS text),
    // while the element is still open.
    let depth9 = format!("{HEADER}{}", "<a>".repeat(9));
    let out = raw(s.port, depth9.as_bytes());
    assert_eq!(
        stream_error_condition(&out),
        Some("policy-violation"),
        "{out}"
    );
    assert!(!out.contains("Encryption is required"), "{out}");
    // 10 000 levels (30 kB, within the pre-auth stanza budget so depth is what trips).
    let deep = format!("{HEADER}{}", "<a>".repeat(10_000));
    let out = raw(s.port, deep.as_bytes());
    assert_eq!(
        stream_error_condition(&out),
        Some("policy-violation"),
        "{out}"
    );
    assert!(!out.contains("Encryption is required"), "{out}");
    // The same with a namespaced, attribute-carrying element (54 kB, within the pre-auth
    // input buffer).
    let deep = format!("{HEADER}{}", "<x:b xmlns:x='urn:x' k='v'>".repeat(2_000));
    let out = raw(s.port, deep.as_bytes());
    assert_eq!(
        stream_error_condition(&out),
        Some("policy-violation"),
        "{out}"
    );
    assert_serves_starttls(s.port);
}

#[test]
fn comments_and_processing_instructions_are_restricted_xml() {
    let s = start();
    let cases = [
        format!("{HEADER}<!-- a comment between stanzas -->"),
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><!-- x --></starttls>"),
        format!("{HEADER}<?evil processing instruction?>"),
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><?pi x?></starttls>"),
        format!(
            "<?xml version='1.0'?><!-- before the header -->{}",
            &HEADER[21..]
        ),
        format!(
            "<?xml version='1.0'?><?pi before the header?>{}",
            &HEADER[21..]
        ),
    ];
    for case in &cases {
        let out = raw(s.port, case.as_bytes());
        assert_eq!(
            stream_error_condition(&out),
            Some("restricted-xml"),
            "{case}: {out}"
        );
    }
    // A comment split over several writes is caught as well.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(HEADER.as_bytes()).unwrap();
    let features = read_until(&mut c, "</features>");
    assert!(features.contains("<features"), "{features}");
    for part in ["<", "!", "-", "-", " x -", "->"] {
        let _ = c.write_all(part.as_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = read_until(&mut c, "</stream:stream>");
    assert_eq!(
        stream_error_condition(&out),
        Some("restricted-xml"),
        "{out}"
    );
    assert_serves_starttls(s.port);
}

/// The soft limit on open files of this process (from /proc; 1024 if unknown).
fn open_files_soft_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1024)
}

/// Opens a plain connection to `port` from the local address `src`.
fn connect_from(rt: &tokio::runtime::Runtime, src: std::net::Ipv4Addr, port: u16) -> TcpStream {
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((src, 0))).unwrap();
        socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Whether the server has closed `c` (EOF or reset) within its read timeout.
fn closed_by_server(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn idle_pre_auth_connections_do_not_starve_clients_and_one_address_is_capped() {
    let s = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 1000 idle connections (fewer if this process may not hold that many sockets; the soft
    // limit is not raised), spread over 127.0.0.2..=127.0.0.40 so that each address stays
    // well under MAX_CONNECTIONS_PER_IP (64): this is about the total, not the per-IP cap.
    let n = 1000.min(open_files_soft_limit().saturating_sub(200));
    assert!(n >= 500, "open-files limit too low for this test");
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 39) as u8);
        let mut c = connect_from(&rt, src, s.port);
        // Half send a stream header and then idle, half send nothing at all.
        if i % 2 == 0 {
            c.write_all(HEADER.as_bytes()).unwrap();
        }
        idle.push(c);
    }
    // The server really took them all on: every header got its features.
    for (i, c) in idle.iter_mut().enumerate().step_by(2) {
        let out = read_until(c, "</features>");
        assert!(out.contains("</features>"), "idle #{i}: {out}");
    }
    // While they idle, a normal client connects, registers and logs in.
    assert_serves_starttls(s.port);
    let token = s.invite(&[]);
    let (ok, out) = s.register("nell", "correct horse battery", &token);
    assert!(ok, "register beside {n} idle connections: {out}");
    let (ok, out) = s.client(
        "login",
        &["--user", "nell", "--password", "correct horse battery"],
    );
    assert!(ok && out.contains("OK logged in"), "{out}");
    // The idle ones are still open (the pre-auth idle timeout is 30 s).
    for c in idle.iter().step_by(50) {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let r = (&*c).read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "idle connection closed early: {r:?}"
        );
    }
    drop(idle);

    // One address: 64 connections are served, the 65th is closed at once.
    let one = std::net::Ipv4Addr::new(127, 0, 0, 50);
    let mut full = Vec::new();
    for i in 0..64 {
        let mut c = connect_from(&rt, one, s.port);
        c.write_all(HEADER.as_bytes()).unwrap();
        let out = read_until(&mut c, "</features>");
        assert!(out.contains("</features>"), "connection {}: {out}", i + 1);
        full.push(c);
    }
    let started = std::time::Instant::now();
    let mut extra = connect_from(&rt, one, s.port);
    let _ = extra.write_all(HEADER.as_bytes());
    let mut extra_out = String::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match extra.read(&mut buf) {
            Ok(0) => break true,
            Ok(k) => extra_out.push_str(&String::from_utf8_lossy(&buf[..k])),
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    };
    assert!(closed, "65th connection from one address was kept open");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "65th connection closed only after {:?}",
        started.elapsed()
    );
    assert!(
        !extra_out.contains("<features"),
        "65th connection was served: {extra_out}"
    );
    // Other addresses are unaffected, and freeing one slot lets the address in again.
    assert_serves_starttls(s.port);
    drop(full.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = connect_from(&rt, one, s.port);
        let _ = c.write_all(HEADER.as_bytes());
        let out = read_until(&mut c, "</features>");
        if out.contains("</features>") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot not released after a connection closed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The remaining 63 are still open.
    for c in &mut full {
        c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        assert!(
            !closed_by_server(c),
            "a capped-address connection was closed"
        );
    }
}

/// A direct-TLS connection to the server, trusting the test CA.
fn tls_connect(s: &Server) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&s.ca).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from(DOMAIN).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// The text content of the first `<name …>…</name>` in `out`.
fn element_text<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    let rest = &out[out.find(&format!("<{name}"))?..];
    let rest = &rest[rest.find('>')? + 1..];
    Some(&rest[..rest.find(&format!("</{name}>"))?])
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Reads the SCRAM server-first challenge (either SASL profile) and decodes it.
fn read_server_first(tls: &mut impl Read, user: &str) -> String {
    use base64::Engine;
    let out = read_until(tls, "</challenge>");
    let challenge = element_text(&out, "challenge")
        .unwrap_or_else(|| panic!("{user}: no server-first challenge but: {out}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(challenge)
        .unwrap();
    String::from_utf8(decoded).unwrap()
}

/// The value of attribute `k` (`"r="`, `"s="`, …) of a SCRAM message.
fn scram_attr(message: &str, k: &str) -> Option<String> {
    message
        .split(',')
        .find_map(|a| a.strip_prefix(k))
        .map(str::to_owned)
}

/// SCRAM-SHA-256 client math (RFC 5802) without channel binding: the client-final message for
/// `server_first` and the server-final message (`v=…`) the server must answer with.
fn scram_client_final(
    password: &str,
    client_first_bare: &str,
    server_first: &str,
    nonce: &str,
    salt: &[u8],
    iterations: u32,
) -> (String, Vec<u8>) {
    scram_client_final_bound(
        password,
        b"n,,",
        client_first_bare,
        server_first,
        nonce,
        salt,
        iterations,
    )
}

/// [`scram_client_final`] with `cbind_input` (the GS2 header and any channel-binding data) in
/// `c=`.
fn scram_client_final_bound(
    password: &str,
    cbind_input: &[u8],
    client_first_bare: &str,
    server_first: &str,
    nonce: &str,
    salt: &[u8],
    iterations: u32,
) -> (String, Vec<u8>) {
    use base64::Engine;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::STANDARD;
    // Hi(password, salt, i) = PBKDF2-HMAC-SHA-256 with one output block.
    let mut u = hmac_sha256(password.as_bytes(), &[salt, &[0, 0, 0, 1]].concat());
    let mut salted = u.clone();
    for _ in 1..iterations {
        u = hmac_sha256(password.as_bytes(), &u);
        salted.iter_mut().zip(&u).for_each(|(a, b)| *a ^= b);
    }
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = sha2::Sha256::digest(&client_key);
    let without_proof = format!("c={},r={nonce}", b64.encode(cbind_input));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = hmac_sha256(&salted, b"Server Key");
    let v = b64.encode(hmac_sha256(&server_key, auth_message.as_bytes()));
    (
        format!("{without_proof},p={}", b64.encode(proof)),
        format!("v={v}").into_bytes(),
    )
}

/// What one SCRAM-SHA-256 attempt over direct TLS produced.
struct ScramAttempt {
    /// The decoded server-first message.
    server_first: String,
    /// `s=` and `i=` of it.
    salt: Vec<u8>,
    iterations: u32,
    /// Everything the server sent after client-final.
    outcome: String,
}

/// Runs a complete SCRAM-SHA-256 exchange (RFC 5802, no channel binding) as `user`.
fn scram_sha256(s: &Server, user: &str, password: &str) -> ScramAttempt {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut tls = tls_connect(s);
    tls.write_all(HEADER.as_bytes()).unwrap();
    let features = read_until(&mut tls, "</features>");
    assert!(features.contains("SCRAM-SHA-256"), "{features}");
    let client_nonce = "rOprNGfwEbeRWgbNEkqO";
    let client_first_bare = format!("n={user},r={client_nonce}");
    tls.write_all(
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            b64.encode(format!("n,,{client_first_bare}"))
        )
        .as_bytes(),
    )
    .unwrap();
    let server_first = read_server_first(&mut tls, user);
    let attr = |k: &str| scram_attr(&server_first, k);
    let nonce = attr("r=").unwrap_or_else(|| panic!("no r= in {server_first}"));
    assert!(
        nonce.starts_with(client_nonce) && nonce.len() > client_nonce.len(),
        "{server_first}"
    );
    let salt = b64
        .decode(attr("s=").unwrap_or_else(|| panic!("no s= in {server_first}")))
        .unwrap();
    let iterations: u32 = attr("i=")
        .unwrap_or_else(|| panic!("no i= in {server_first}"))
        .parse()
        .unwrap();
    assert!(!salt.is_empty() && iterations >= 4096, "{server_first}");
    let (client_final, server_signature) = scram_client_final(
        password,
        &client_first_bare,
        &server_first,
        &nonce,
        &salt,
        iterations,
    );
    let outcome = scram_finish(&mut tls, &client_final, &server_signature);
    ScramAttempt {
        server_first,
        salt,
        iterations,
        outcome,
    }
}

#[test]
fn unknown_user_and_wrong_password_look_the_same_in_scram() {
    let s = start();
    let token = s.invite(&[]);
    s.registered("olga", "correct horse battery", &token);
    // The hand-written client is right: the real password succeeds.
    let good = scram_sha256(&s, "olga", "correct horse battery");
    assert!(good.outcome.contains("<success"), "{}", good.outcome);
    // Wrong password for an existing user, and a user that does not exist: both get a full
    // server-first message and both fail the same way after client-final.
    let wrong = scram_sha256(&s, "olga", "wrong horse battery");
    let ghost = scram_sha256(&s, "nobody-here", "correct horse battery");
    for (what, a) in [("wrong password", &wrong), ("unknown user", &ghost)] {
        assert_eq!(
            sasl_failure_condition(&a.outcome),
            Some("not-authorized"),
            "{what}: {}",
            a.outcome
        );
        assert!(!a.outcome.contains("<text"), "{what}: {}", a.outcome);
    }
    assert_eq!(wrong.salt, good.salt, "the stored salt is served");
    // Nothing in server-first tells the two apart: same iteration count, same salt length.
    assert_eq!(ghost.iterations, wrong.iterations);
    assert_eq!(ghost.salt.len(), wrong.salt.len());
    assert_ne!(ghost.salt, wrong.salt);
    // A made-up salt that changed between attempts would give the unknown user away.
    let again = scram_sha256(&s, "nobody-here", "other password!!");
    assert_eq!(
        again.salt, ghost.salt,
        "{} / {}",
        again.server_first, ghost.server_first
    );
    assert_eq!(
        sasl_failure_condition(&again.outcome),
        Some("not-authorized"),
        "{}",
        again.outcome
    );
}

/// One SCRAM-SHA-256-PLUS attempt with `tls-exporter` channel binding (RFC 9266) over direct
/// TLS; `tamper` alters the binding data the client sends. Returns the outcome.
fn scram_plus_exporter(s: &Server, user: &str, password: &str, tamper: bool) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut tls = tls_connect(s);
    tls.write_all(HEADER.as_bytes()).unwrap();
    let features = read_until(&mut tls, "</features>");
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(features.contains("SCRAM-SHA-256-PLUS"), "{features}");
    assert!(features.contains("tls-exporter"), "{features}");
    let mut binding = tls
        .conn
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .unwrap();
    if tamper {
        binding[0] ^= 1;
    }
    let gs2 = "p=tls-exporter,,";
    let client_nonce = "Xq7zPL2mT9wVd4RbKc8nYh";
    let client_first_bare = format!("n={user},r={client_nonce}");
    tls.write_all(
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{}</auth>",
            b64.encode(format!("{gs2}{client_first_bare}"))
        )
        .as_bytes(),
    )
    .unwrap();
    let server_first = read_server_first(&mut tls, user);
    let attr = |k: &str| scram_attr(&server_first, k).unwrap();
    let (client_final, server_signature) = scram_client_final_bound(
        password,
        &[gs2.as_bytes(), &binding].concat(),
        &client_first_bare,
        &server_first,
        &attr("r="),
        &b64.decode(attr("s=")).unwrap(),
        attr("i=").parse().unwrap(),
    );
    scram_finish(&mut tls, &client_final, &server_signature)
}

/// Sends the SCRAM client-final message (RFC 6120 SASL profile) and reads the outcome; on
/// success the server's signature must be `server_signature`.
fn scram_finish(tls: &mut TlsClient, client_final: &str, server_signature: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    tls.write_all(
        format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64.encode(client_final)
        )
        .as_bytes(),
    )
    .unwrap();
    let outcome = read_outcome(tls);
    if outcome.contains("</success>") {
        let got = element_text(&outcome, "success").unwrap();
        assert_eq!(
            b64.decode(got).unwrap(),
            server_signature,
            "server signature"
        );
    }
    outcome
}

#[test]
fn scram_plus_binds_to_the_tls_exporter() {
    let s = start();
    let token = s.invite(&[]);
    s.registered("pia", "correct horse battery", &token);
    // The client's own TLS library computes the binding; the server must agree on it.
    let good = scram_plus_exporter(&s, "pia", "correct horse battery", false);
    assert!(good.contains("<success"), "{good}");
    // Binding data from another TLS session (here: altered) is refused.
    let bad = scram_plus_exporter(&s, "pia", "correct horse battery", true);
    assert!(bad.contains("<failure"), "{bad}");
}

#[test]
fn server_capabilities_validate_with_slixmpp() {
    let s = start();
    let t = s.invite(&[]);
    s.registered("cara", "correct horse battery", &t);
    let (ok, out) = s.client(
        "caps",
        &["--user", "cara", "--password", "correct horse battery"],
    );
    assert!(ok && out.contains("OK caps "), "{out}");
}

#[test]
fn personal_eventing_with_slixmpp() {
    let s = start();
    let t1 = s.invite(&["--group", "default"]);
    let t2 = s.invite(&["--group", "default"]);
    let t3 = s.invite(&[]);
    s.registered("ivy", "purple ocean lantern", &t1);
    s.registered("jon", "granite tulip saddle", &t2);
    s.registered("kim", "velvet comet anchor", &t3);
    let (ok, out) = s.three_users(
        "pep",
        ("ivy", "purple ocean lantern"),
        ("jon", "granite tulip saddle"),
        ("kim", "velvet comet anchor"),
    );
    assert!(ok && out.contains("OK pep "), "{out}");
}

#[test]
fn inactive_clients_get_presence_late_and_coalesced_but_messages_at_once() {
    let s = start();
    let t1 = s.invite(&["--group", "default"]);
    let t2 = s.invite(&["--group", "default"]);
    s.registered("nina", "correct horse battery", &t1);
    s.registered("otto", "staple battery horse", &t2);
    // Circle members are mutual contacts, so otto's presence goes to nina.
    let (ok, out) = s.two_users(
        "csi",
        ("nina", "correct horse battery"),
        ("otto", "staple battery horse"),
    );
    assert!(ok && out.contains("OK csi "), "{out}");
    println!("{}", out.lines().next().unwrap_or_default());
}

#[test]
fn blocking_refuses_both_ways_until_unblocked_and_reports_reach_admins() {
    let s = start();
    let t1 = s.invite(&["--admin"]);
    let t2 = s.invite(&[]);
    s.registered("jade", "correct horse battery", &t1);
    s.registered("kurt", "staple battery horse", &t2);
    let (ok, out) = s.client(
        "block",
        &[
            "--user",
            "jade",
            "--password",
            "correct horse battery",
            "--user2",
            "kurt",
            "--password2",
            "staple battery horse",
        ],
    );
    assert!(ok && out.contains("OK blocked"), "{out}");
}

#[test]
fn private_xml_storage_survives_reconnecting() {
    let s = start();
    let t = s.invite(&[]);
    s.registered("lena", "correct horse battery", &t);
    let (ok, out) = s.client(
        "private",
        &[
            "--user",
            "lena",
            "--password",
            "correct horse battery",
            "--user2",
            "nobody",
        ],
    );
    assert!(ok && out.contains("OK private storage kept green"), "{out}");
}

#[test]
fn bookmarks_set_in_one_format_are_read_in_the_other() {
    let s = start();
    let t1 = s.invite(&["--group", "default"]);
    let t2 = s.invite(&["--group", "default"]);
    s.registered("ivy", "purple ocean lantern", &t1);
    s.registered("jon", "granite tulip saddle", &t2);
    let (ok, out) = s.two_users(
        "bookmarks",
        ("ivy", "purple ocean lantern"),
        ("jon", "granite tulip saddle"),
    );
    assert!(ok && out.contains("OK bookmarks both ways"), "{out}");
}

// SASL2 (XEP-0388), Bind 2 (XEP-0386) and FAST (XEP-0484). No installable third-party client
// speaks these (slixmpp has no SASL2; nbxmpp needs a GLib main loop), so these tests speak the
// XML by hand over rustls, reusing the SCRAM client above.

type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

const CLIENT_ID: &str = "0f3c8a52-4d36-4c5e-9a1b-7f0e2d6c9b41";

/// The value of the first `name="…"` (or `name='…'`) attribute in `out`.
fn attr_value<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    let at = out.find(&format!(" {name}="))? + name.len() + 2;
    let quote = out[at..].chars().next()?;
    let rest = &out[at + 1..];
    Some(&rest[..rest.find(quote)?])
}

/// Opens a direct-TLS stream and returns it with the stream features.
fn sasl2_stream(s: &Server) -> (TlsClient, String) {
    let mut tls = tls_connect(s);
    tls.write_all(HEADER.as_bytes()).unwrap();
    let features = read_until(&mut tls, "</features>");
    assert!(features.contains("</features>"), "{features}");
    (tls, features)
}

/// `<authenticate/>` with a user agent and the extra inline elements.
fn authenticate(mechanism: &str, initial: &[u8], client_id: &str, inline: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'>\
         <initial-response>{}</initial-response>\
         <user-agent id='{client_id}'><software>Testapp</software><device>CI</device></user-agent>\
         {inline}</authenticate>",
        b64.encode(initial)
    )
}

/// SASL2 SCRAM-SHA-256 login; returns the stream and everything up to the end of the outcome.
fn sasl2_scram(s: &Server, user: &str, password: &str, inline: &str) -> (TlsClient, String) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut tls, features) = sasl2_stream(s);
    let client_nonce = "fyko+d2lbbFgONRv9qkxdawL";
    let client_first_bare = format!("n={user},r={client_nonce}");
    let first = format!("n,,{client_first_bare}");
    tls.write_all(authenticate("SCRAM-SHA-256", first.as_bytes(), CLIENT_ID, inline).as_bytes())
        .unwrap();
    assert!(features.contains("urn:xmpp:sasl:2"), "{features}");
    let server_first = read_server_first(&mut tls, user);
    let attr = |k: &str| scram_attr(&server_first, k).unwrap();
    let salt = b64.decode(attr("s=")).unwrap();
    let (client_final, server_final) = scram_client_final(
        password,
        &client_first_bare,
        &server_first,
        &attr("r="),
        &salt,
        attr("i=").parse().unwrap(),
    );
    tls.write_all(
        format!(
            "<response xmlns='urn:xmpp:sasl:2'>{}</response>",
            b64.encode(client_final)
        )
        .as_bytes(),
    )
    .unwrap();
    let outcome = read_outcome(&mut tls);
    if outcome.contains("</success>") {
        let data = element_text(&outcome, "additional-data").unwrap();
        assert_eq!(b64.decode(data).unwrap(), server_final, "server signature");
    }
    (tls, outcome)
}

fn read_outcome(tls: &mut TlsClient) -> String {
    let mut outcome = String::new();
    let mut buf = [0u8; 4096];
    while !outcome.contains("</failure>") && !outcome.contains("</success>") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => outcome.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    outcome
}

/// The HT-SHA-256-NONE initial response for `token` (XEP-0484).
fn ht_initial(user: &str, token: &str) -> Vec<u8> {
    let mut msg = format!("{user}\0").into_bytes();
    msg.extend(hmac_sha256(token.as_bytes(), b"Initiator"));
    msg
}

fn fast_login(s: &Server, user: &str, token: &str, client_id: &str) -> (TlsClient, String) {
    let (mut tls, _) = sasl2_stream(s);
    let bind = "<bind xmlns='urn:xmpp:bind:0'><tag>Testapp</tag></bind>";
    tls.write_all(
        authenticate("HT-SHA-256-NONE", &ht_initial(user, token), client_id, bind).as_bytes(),
    )
    .unwrap();
    let outcome = read_outcome(&mut tls);
    (tls, outcome)
}

/// A ping to the server on a bound stream gets its result.
fn assert_ping(tls: &mut TlsClient, id: &str) {
    tls.write_all(
        format!("<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
            .as_bytes(),
    )
    .unwrap();
    let mut out = read_until(tls, id);
    while out.find(id).is_some_and(|at| !out[at..].contains('>')) {
        out.push_str(&read_until(tls, ">"));
    }
    let at = out
        .rfind("<iq")
        .unwrap_or_else(|| panic!("no reply: {out}"));
    let reply = &out[at..];
    assert!(
        reply.contains(id)
            && (reply.contains("type=\"result\"") || reply.contains("type='result'")),
        "{out}"
    );
}

#[test]
fn sasl2_bind2_and_fast_tokens() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let s = start();
    let token = s.invite(&[]);
    s.registered("petra", "correct horse battery", &token);

    // The features offer SASL2 with the same SCRAM mechanisms, Bind 2 and FAST inline.
    let (_, features) = sasl2_stream(&s);
    for f in [
        "urn:xmpp:sasl:2",
        "urn:xmpp:bind:0",
        "HT-SHA-256-NONE",
        "SCRAM-SHA-256-PLUS",
        "urn:ietf:params:xml:ns:xmpp-sasl",
    ] {
        assert!(features.contains(f), "{f} missing: {features}");
    }

    // A wrong password is not-authorized, in the SASL2 failure.
    let (_, outcome) = sasl2_scram(&s, "petra", "wrong horse battery", "");
    assert!(outcome.contains("urn:xmpp:sasl:2"), "{outcome}");
    assert_eq!(
        sasl_failure_condition(&outcome),
        Some("not-authorized"),
        "{outcome}"
    );

    // SCRAM with Bind 2 (carbons and stream management inline) and a token request.
    let inline = "<bind xmlns='urn:xmpp:bind:0'><tag>Testapp</tag>\
                  <enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>\
                  <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";
    let (mut tls, outcome) = sasl2_scram(&s, "petra", "correct horse battery", inline);
    assert!(outcome.contains("<success"), "{outcome}");
    let jid = element_text(&outcome, "authorization-identifier").unwrap();
    let resource = jid
        .strip_prefix("petra@chat.test/Testapp.")
        .unwrap_or_else(|| panic!("{jid}"));
    assert_eq!(resource.len(), 8, "{jid}");
    assert!(outcome.contains("<bound"), "{outcome}");
    assert!(outcome.contains("<enabled"), "{outcome}");
    let fast_token = attr_value(&outcome, "token").unwrap().to_string();
    assert!(attr_value(&outcome, "expiry").unwrap().starts_with("20"));
    assert!(fast_token.len() > 64, "{outcome}");
    // The stream is bound at once: no restart, no features, a ping works.
    assert_ping(&mut tls, "ping-1");
    drop(tls);

    // The database holds neither the token nor its SHA-256 (which would work as the HMAC key).
    let stored = stored_fast_tokens(s.data.path(), "petra");
    assert_eq!(stored.len(), 1);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(fast_token.as_bytes()).to_vec();
    assert!(stored[0] != digest && stored[0] != fast_token.as_bytes());

    // The token logs the same client in, with the same resource and the server's proof.
    let (mut tls, outcome) = fast_login(&s, "petra", &fast_token, CLIENT_ID);
    assert!(outcome.contains("<success"), "{outcome}");
    assert_eq!(
        element_text(&outcome, "authorization-identifier"),
        Some(jid),
        "{outcome}"
    );
    let data = element_text(&outcome, "additional-data").unwrap();
    assert_eq!(
        b64.decode(data).unwrap(),
        hmac_sha256(fast_token.as_bytes(), b"Responder")
    );
    assert_ping(&mut tls, "ping-2");
    drop(tls);

    // A wrong token, another client's id, and an unknown user are refused alike.
    let mut wrong = fast_token.clone();
    wrong.replace_range(0..1, if wrong.starts_with('A') { "B" } else { "A" });
    for (user, token, client) in [
        ("petra", wrong.as_str(), CLIENT_ID),
        ("petra", fast_token.as_str(), "another-client"),
        ("nobody", fast_token.as_str(), CLIENT_ID),
    ] {
        let (_, outcome) = fast_login(&s, user, token, client);
        assert_eq!(
            sasl_failure_condition(&outcome),
            Some("not-authorized"),
            "{user}/{client}: {outcome}"
        );
    }
    // A password login that asks for a new token retires the old one for this client.
    let request = "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";
    let (_, outcome) = sasl2_scram(&s, "petra", "correct horse battery", request);
    let newer = attr_value(&outcome, "token").unwrap().to_string();
    assert_ne!(newer, fast_token);
    let (_, outcome) = fast_login(&s, "petra", &fast_token, CLIENT_ID);
    assert_eq!(
        sasl_failure_condition(&outcome),
        Some("not-authorized"),
        "{outcome}"
    );
    let (_, outcome) = fast_login(&s, "petra", &newer, CLIENT_ID);
    assert!(outcome.contains("<success"), "{outcome}");

    // Without Bind 2 the stream continues without a restart: features, then legacy bind.
    let (mut tls, outcome) = sasl2_scram(&s, "petra", "correct horse battery", "");
    assert_eq!(
        element_text(&outcome, "authorization-identifier"),
        Some("petra@chat.test"),
        "{outcome}"
    );
    let mut features = outcome.clone();
    if !features.contains("</features>") {
        features.push_str(&read_until(&mut tls, "</features>"));
    }
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    tls.write_all(
        b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r1</resource></bind></iq>",
    )
    .unwrap();
    let out = read_until(&mut tls, "</iq>");
    assert!(out.contains("petra@chat.test/r1"), "{out}");
    assert_ping(&mut tls, "ping-3");
    drop(tls);

    // A token does not get around a locked account.
    let (_, outcome) = sasl2_scram(&s, "petra", "correct horse battery", request);
    let fast_token = attr_value(&outcome, "token").unwrap().to_string();
    with_store(s.data.path(), |store| async move {
        store.lock_account("petra").await.unwrap();
    });
    let (_, outcome) = fast_login(&s, "petra", &fast_token, CLIENT_ID);
    assert_eq!(
        sasl_failure_condition(&outcome),
        Some("account-disabled"),
        "{outcome}"
    );
}

#[test]
fn require_sasl2_drops_legacy_sasl_and_needs_a_client_id() {
    let s = start_with(&[("SNIKKET_TWEAK_REQUIRE_SASL2", "1")]);
    let token = s.invite(&[]);
    s.registered("quinn", "correct horse battery", &token);
    let (mut tls, features) = sasl2_stream(&s);
    assert!(features.contains("urn:xmpp:sasl:2"), "{features}");
    assert!(
        !features.contains("<mechanisms"),
        "legacy SASL still offered: {features}"
    );
    // Legacy <auth> is refused.
    tls.write_all(
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biwsbj1xdWlubixyPWFiY2RlZmdo</auth>",
    )
    .unwrap();
    let out = read_until(&mut tls, "</failure>");
    assert!(out.contains("<failure"), "{out}");
    // SASL2 without a user agent id is malformed.
    let (mut tls, _) = sasl2_stream(&s);
    tls.write_all(
        b"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'>\
          <initial-response>biwsbj1xdWlubixyPWFiY2RlZmdo</initial-response></authenticate>",
    )
    .unwrap();
    let out = read_outcome(&mut tls);
    assert_eq!(
        sasl_failure_condition(&out),
        Some("malformed-request"),
        "{out}"
    );
    // With one, the login works.
    let (_, outcome) = sasl2_scram(&s, "quinn", "correct horse battery", "");
    assert!(outcome.contains("<success"), "{outcome}");
}

#[test]
fn push_notifications_reach_an_app_server() {
    let s = start();
    let t1 = s.invite(&["--group", "default"]);
    let t2 = s.invite(&["--group", "default"]);
    let t3 = s.invite(&[]);
    s.registered("pia", "purple ocean lantern", &t1);
    s.registered("quin", "granite tulip saddle", &t2);
    s.registered("pushapp", "velvet comet anchor", &t3);
    let (ok, out) = s.three_users(
        "push",
        ("pia", "purple ocean lantern"),
        ("quin", "granite tulip saddle"),
        ("pushapp", "velvet comet anchor"),
    );
    assert!(ok && out.contains("OK push:"), "{out}");
    // Encrypted push (tigase:push:encrypt:0, the Snikket iOS app's).
    let (ok, out) = s.three_users(
        "push_encrypted",
        ("pia", "purple ocean lantern"),
        ("quin", "granite tulip saddle"),
        ("pushapp", "velvet comet anchor"),
    );
    assert!(ok && out.contains("OK encrypted push"), "{out}");
}

#[test]
fn clients_are_listed_and_a_fast_client_is_revoked() {
    let s = start();
    let token = s.invite(&[]);
    s.registered("rosa", "correct horse battery", &token);
    // A SASL2 client with a FAST token, still connected.
    let inline = "<bind xmlns='urn:xmpp:bind:0'><tag>Testapp</tag></bind>\
                  <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";
    let (mut tls, outcome) = sasl2_scram(&s, "rosa", "correct horse battery", inline);
    assert!(outcome.contains("<success"), "{outcome}");
    let fast_token = attr_value(&outcome, "token").unwrap().to_string();
    assert_ping(&mut tls, "before-revoke");

    // slixmpp lists both clients and revokes the FAST one.
    let (ok, out) = s.client(
        "cam",
        &["--user", "rosa", "--password", "correct horse battery"],
    );
    assert!(ok && out.contains("OK cam:"), "{out}");

    // The revoked client's stream is closed, and its token no longer logs in.
    let closed = read_until(&mut tls, "</stream:stream>");
    assert!(closed.contains("not-authorized"), "{closed}");
    let (_, outcome) = fast_login(&s, "rosa", &fast_token, CLIENT_ID);
    assert_eq!(
        sasl_failure_condition(&outcome),
        Some("not-authorized"),
        "{outcome}"
    );
}

/// Runs `f` on the server's (SQLite) database.
fn with_store<F, Fut, T>(data: &Path, f: F) -> T
where
    F: FnOnce(snikket_store::Store) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", data.join("server/snikket.sqlite").display());
        let store = snikket_store::Store::open_url(&url).await.unwrap();
        let out = f(store.clone()).await;
        store.close().await;
        out
    })
}

/// The token values the database holds for an account's test client.
fn stored_fast_tokens(data: &Path, user: &str) -> Vec<Vec<u8>> {
    with_store(data, |store| async move {
        let tokens = store.fast_tokens(user, CLIENT_ID).await.unwrap();
        tokens.into_iter().map(|t| t.token_hash).collect()
    })
}

/// The response to `req`, sent with a fresh client (the internal HTTP service speaks plain HTTP).
fn http(
    rt: &tokio::runtime::Runtime,
    req: reqwest::RequestBuilder,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    rt.block_on(async {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.bytes().await.unwrap().to_vec())
    })
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// XEP-0363 end to end: slixmpp discovers `share.DOMAIN`, uploads 3 MB through its own HTTP code,
/// and the file comes back with the download headers of spec 3.6; a limited user can upload too.
#[test]
fn files_are_shared_with_http_upload() {
    use sha2::Digest;
    let s = start();
    let t1 = s.invite(&[]);
    let t2 = s.invite(&["--role", "limited"]);
    s.registered("ivy", "file sharing password", &t1);
    s.registered("jon", "limited user password", &t2);
    let base = format!("http://127.0.0.1:{}", s.http_port);
    let mut results = Vec::new();
    for (user, password) in [
        ("ivy", "file sharing password"),
        ("jon", "limited user password"),
    ] {
        let (ok, out) = s.client(
            "upload",
            &[
                "--user",
                user,
                "--password",
                password,
                "--count",
                "3000000",
                "--http",
                &base,
            ],
        );
        assert!(ok, "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("OK "))
            .unwrap()
            .to_string();
        results.push(line);
    }
    let fields: Vec<&str> = results[0].split(' ').collect();
    let (get_url, sha, put_url, auth) = (fields[1], fields[2], fields[3], fields[4..].join(" "));
    assert!(
        get_url.starts_with("https://share.chat.test/upload/")
            && get_url.ends_with("/holiday%20photo.jpg"),
        "{get_url}"
    );
    let local = |url: &str| format!("{base}/upload/{}", url.split_once("/upload/").unwrap().1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = reqwest::Client::new();

    // The download: whole, ranged, HEAD, CORS.
    let (status, h, body) = http(
        &rt,
        c.get(local(get_url))
            .header("Origin", "https://web.example"),
    );
    assert_eq!(status, 200);
    assert_eq!(format!("{:x}", sha2::Sha256::digest(&body)), sha);
    assert_eq!(header(&h, "content-type"), "image/jpeg");
    assert_eq!(
        header(&h, "content-disposition"),
        "inline; filename*=UTF-8''holiday%20photo.jpg"
    );
    assert_eq!(header(&h, "cache-control"), "max-age=31556952, immutable");
    assert_eq!(
        header(&h, "content-security-policy"),
        "default-src 'none'; media-src 'self'; frame-ancestors 'none';"
    );
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "x-frame-options"), "DENY");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        "https://web.example"
    );
    assert_eq!(header(&h, "access-control-allow-credentials"), "true");
    let (status, h, part) = http(&rt, c.get(local(get_url)).header("Range", "bytes=10-19"));
    assert_eq!(status, 206);
    assert_eq!(part, body[10..20]);
    assert_eq!(header(&h, "content-range"), "bytes 10-19/3000000");
    let (status, _, _) = http(&rt, c.get(local(get_url)).header("Range", "bytes=3000000-"));
    assert_eq!(status, 416);
    let (status, h, empty) = http(&rt, c.head(local(get_url)));
    assert_eq!((status, empty.len()), (200, 0));
    assert_eq!(header(&h, "content-length"), "3000000");
    // The limited user's upload is stored as well.
    let jon: Vec<&str> = results[1].split(' ').collect();
    let (status, _, body) = http(&rt, c.get(local(jon[1])));
    assert_eq!(status, 200);
    assert_eq!(format!("{:x}", sha2::Sha256::digest(&body)), jon[2]);

    // The PUT rules, on a fresh 5-byte slot.
    let put = local(put_url);
    let (status, h, _) = http(&rt, c.put(&put).body("hello"));
    assert_eq!(status, 401);
    assert_eq!(header(&h, "www-authenticate"), "Bearer");
    let (status, _, _) = http(
        &rt,
        c.put(&put)
            .header("Authorization", "Bearer wrong")
            .body("hello"),
    );
    assert_eq!(status, 403);
    let (status, _, _) = http(
        &rt,
        c.put(&put).header("Authorization", &auth).body("hello!"),
    );
    assert_eq!(status, 413);
    let (status, _, _) = http(&rt, c.put(&put).header("Authorization", &auth).body("hell"));
    assert_eq!(status, 400);
    // Not there until it is complete.
    let (status, _, _) = http(&rt, c.get(&put));
    assert_eq!(status, 404);
    let (status, _, _) = http(
        &rt,
        c.put(&put).header("Authorization", &auth).body("hello"),
    );
    assert_eq!(status, 201);
    let (status, _, _) = http(
        &rt,
        c.put(&put).header("Authorization", &auth).body("hello"),
    );
    assert_eq!(status, 409);
    let (status, h, body) = http(&rt, c.get(&put));
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(header(&h, "content-type"), "text/plain");
    let (status, h, _) = http(
        &rt,
        c.request(reqwest::Method::OPTIONS, &put)
            .header("Origin", "https://web.example")
            .header("Access-Control-Request-Method", "PUT"),
    );
    assert_eq!(status, 200);
    assert!(header(&h, "access-control-allow-headers").contains("Authorization"));
    assert!(header(&h, "access-control-allow-methods").contains("PUT"));

    // Unknown and malformed slots, and the information page.
    for path in [
        "/upload/nosuchslot/x.jpg",
        "/upload/..%2F..%2Fetc/passwd",
        "/upload/a.part/x",
    ] {
        let (status, _, _) = http(&rt, c.get(format!("{base}{path}")));
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, page) = http(&rt, c.get(format!("{base}/upload/")));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("File sharing"));

    // The files are on the data volume, one per slot, with nothing partial left behind.
    let dir = s.data.path().join("server/uploads");
    let mut sizes: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .inspect(|e| assert!(!e.file_name().to_string_lossy().ends_with(".part")))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![5, 3_000_000, 3_000_000]);
}

/// The daily per-user quota and the server's storage quota, with their error texts.
#[test]
fn upload_quotas_are_enforced() {
    let s = start_with(&[
        // About 2 KiB per user per day and 3 KiB in all.
        ("SNIKKET_DAILY_UPLOAD_LIMIT_PER_USER_GB", "0.000002"),
        ("SNIKKET_UPLOAD_STORAGE_GB", "0.000003"),
    ]);
    let t1 = s.invite(&[]);
    let t2 = s.invite(&[]);
    s.registered("kim", "quota test password", &t1);
    s.registered("lou", "second quota password", &t2);
    let (ok, out) = s.two_users(
        "upload_quota",
        ("kim", "quota test password"),
        ("lou", "second quota password"),
    );
    assert!(ok, "{out}");
}

/// A circle's group chat (spec 4.3) with slixmpp's MUC plugin: members get an autojoin bookmark,
/// join, see history and each other's messages, list the members; an outsider is refused.
#[test]
fn circle_members_chat_in_their_group_chat() {
    let s = start();
    let t1 = s.invite(&["--group", "default"]);
    let t2 = s.invite(&["--group", "default"]);
    let t3 = s.invite(&[]);
    s.registered("mia", "group chat password", &t1);
    s.registered("ned", "another group password", &t2);
    s.registered("ola", "outsider password here", &t3);
    // The admin panel attaches a chat to the circle; here the store is used directly.
    let db = s.data.path().join("server/snikket.sqlite");
    let room = "family@groups.chat.test";
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = snikket_store::Store::open_url(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            assert!(store.circles_of("ola").await.unwrap().is_empty());
            store
                .add_circle_chat(snikket_store::DEFAULT_CIRCLE_ID, room, "Family")
                .await
                .unwrap();
            store.close().await;
        });
    let (ok, out) = s.client(
        "muc",
        &[
            "--user",
            "mia",
            "--password",
            "group chat password",
            "--user2",
            "ned",
            "--password2",
            "another group password",
            "--user3",
            "ola",
            "--password3",
            "outsider password here",
            "--group",
            room,
        ],
    );
    assert!(ok, "{out}");
}

/// A group chat created from an app (XEP-0045 with slixmpp): configuration, affiliations, a
/// mediated invitation, the subject, a kick and destruction.
#[test]
fn people_create_and_run_their_own_group_chats() {
    let s = start();
    let users = [
        ("pia", "owner of the chat pw"),
        ("quin", "member of the chat pw"),
        ("rae", "invited to chat pw"),
    ];
    for (user, password) in users {
        let t = s.invite(&[]);
        s.registered(user, password, &t);
    }
    let (ok, out) = s.client(
        "muc_own",
        &[
            "--user",
            users[0].0,
            "--password",
            users[0].1,
            "--user2",
            users[1].0,
            "--password2",
            users[1].1,
            "--user3",
            users[2].0,
            "--password3",
            users[2].1,
            "--group",
            "ski-trip@groups.chat.test",
        ],
    );
    assert!(ok, "{out}");
}
