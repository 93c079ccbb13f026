//! Server-to-server federation, end to end on loopback: two of our servers (also across a peer
//! restart), ours and Prosody (XEP-0288 bidi), peers with untrusted or misnamed certificates,
//! limited users, and raw server streams for forged dialback, spoofed senders, bad addressing and
//! bidi. Clients are slixmpp (`tests/clients/xmpp_client.py`); every process logs to a file that
//! is printed when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use snikket_testkit::{free_port, Child, TestCa};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_snikket-server");
const PYTHON: &str = "/usr/bin/python3";
const PROSODY: &str = "/usr/bin/prosody";
const PROSODYCTL: &str = "/usr/bin/prosodyctl";
/// Seconds a client scenario waits for any one thing (the whole scenario: four times as long).
const TIMEOUT: &str = "10";

/// A child process whose output goes to log files, shown (the tail, with a full copy kept in the
/// temp directory) when the test fails, or always with `S2S_TEST_LOGS=1`.
struct Proc {
    child: Option<Child>,
    name: String,
    logs: Vec<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` with its stdout and stderr appended to `out`; `logs` are the files to show.
    fn spawn(name: &str, mut cmd: Command, out: &Path, logs: Vec<PathBuf>) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap();
        cmd.stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        Proc {
            child: Some(Child::spawn(name, cmd)),
            name: name.to_string(),
            logs,
        }
    }

    /// Waits until `port` accepts connections, failing early (with the logs) if the process exits.
    fn wait_for_port(&mut self, port: u16, what: &str) {
        let start = Instant::now();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while start.elapsed() < Duration::from_secs(60) {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait() {
                panic!(
                    "{} exited ({status}) before its {what} port opened",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{}: nothing listening on the {what} port {port}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Stopped first, so that its logs are complete.
        drop(self.child.take());
        // S2S_TEST_LOGS=1 shows them for passing tests too.
        if !std::thread::panicking() && std::env::var_os("S2S_TEST_LOGS").is_none() {
            return;
        }
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let file = log.file_name().unwrap().to_string_lossy();
            let keep = std::env::temp_dir().join(format!("s2s-{test}-{}-{file}", self.name));
            let _ = std::fs::write(&keep, &text);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(400)..].join("\n");
            eprintln!(
                "===== {} {} (last {} of {} lines; all of it in {}) =====\n{tail}",
                self.name,
                log.display(),
                lines.len().min(400),
                lines.len(),
                keep.display()
            );
        }
    }
}

/// Where a client logs in: c2s port, the CA its certificate chains to, the domain.
struct Endpoint {
    port: u16,
    ca: PathBuf,
    domain: String,
}

/// One of our servers.
struct Server {
    proc: Option<Proc>,
    domain: &'static str,
    data: tempfile::TempDir,
    /// The whole environment of the server process.
    env: Vec<(String, String)>,
    port: u16,
    s2s_port: u16,
    ca: PathBuf,
}

fn base_env(cmd: &mut Command, domain: &str, data: &Path) {
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SNIKKET_DOMAIN", domain)
        .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
        .env("SNIKKET_TWEAK_DATA_DIR", data)
        .env("SNIKKET_LOGLEVEL", "debug");
}

/// `SNIKKET_TWEAK_S2S_ROUTES` sending `domain` and its group chat and file sharing hosts to `port`.
fn routes(to: &[(&str, u16)]) -> String {
    let mut pairs = Vec::new();
    for (domain, port) in to {
        for host in [
            domain.to_string(),
            format!("groups.{domain}"),
            format!("share.{domain}"),
        ] {
            pairs.push(format!("{host}=127.0.0.1:{port}"));
        }
    }
    pairs.join(",")
}

/// Starts our server for `domain` with a certificate from `ca`, trusting `trust` for peers, its
/// s2s listener on `s2s_port` and the given routes to other servers' s2s ports.
fn start(
    domain: &'static str,
    ca: &TestCa,
    trust: &[&TestCa],
    s2s_port: u16,
    to: &[(&str, u16)],
) -> Server {
    let data = snikket_testkit::temp_dir();
    let (groups, share) = (format!("groups.{domain}"), format!("share.{domain}"));
    ca.write_live_dir(
        &data.path().join("letsencrypt/live").join(domain),
        &[domain, groups.as_str(), share.as_str()],
    );
    let ca_path = data.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let trusted = data.path().join("s2s-trust.pem");
    std::fs::write(
        &trusted,
        trust.iter().map(|c| c.cert_pem()).collect::<String>(),
    )
    .unwrap();
    let port = free_port();
    let d = data.path().display().to_string();
    let env = [
        ("PATH", "/usr/bin:/bin".to_string()),
        ("SNIKKET_DOMAIN", domain.to_string()),
        ("SNIKKET_ADMIN_EMAIL", "admin@example.com".to_string()),
        ("SNIKKET_TWEAK_DATA_DIR", d),
        ("SNIKKET_LOGLEVEL", "debug".to_string()),
        ("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1".to_string()),
        ("SNIKKET_TWEAK_C2S_PORT", port.to_string()),
        ("SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT", free_port().to_string()),
        ("SNIKKET_TWEAK_S2S_PORT", s2s_port.to_string()),
        ("SNIKKET_TWEAK_S2S_ROUTES", routes(to)),
        ("SNIKKET_TWEAK_S2S_CAFILE", trusted.display().to_string()),
        (
            "SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE",
            "127.0.0.1".to_string(),
        ),
        ("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", free_port().to_string()),
        ("SNIKKET_TWEAK_SERVER_GRPC_PORT", free_port().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut server = Server {
        proc: None,
        domain,
        data,
        env,
        port,
        s2s_port,
        ca: ca_path,
    };
    server.spawn();
    server
}

impl Server {
    /// Starts the process (its log appended to `server.log` in the data directory).
    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = self.data.path().join("server.log");
        let mut proc = Proc::spawn(self.domain, cmd, &log, vec![log.clone()]);
        proc.wait_for_port(self.port, "c2s");
        proc.wait_for_port(self.s2s_port, "s2s");
        self.proc = Some(proc);
    }

    /// Stops the process, with SIGKILL (`crash`: no stream is closed) or SIGTERM, and starts it
    /// again on the same data and ports.
    fn restart(&mut self, crash: bool) {
        let mut proc = self.proc.take().unwrap();
        let child = proc.child.take().unwrap();
        if crash {
            drop(child);
        } else {
            child.terminate();
        }
        self.spawn();
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            port: self.port,
            ca: self.ca.clone(),
            domain: self.domain.to_string(),
        }
    }

    fn invite(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        base_env(&mut cmd, self.domain, self.data.path());
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

    /// Creates an account through an invite (with `invite_args`, e.g. a role) and registration.
    #[track_caller]
    fn user(&self, name: &str, password: &str, invite_args: &[&str]) {
        let token = self.invite(invite_args);
        // `--token=` keeps a token that starts with '-' (base64url) from looking like an option.
        let token = format!("--token={token}");
        let (ok, out) = client(
            "register",
            &self.endpoint(),
            None,
            &["--user", name, "--password", password, token.as_str()],
        );
        assert!(ok, "registering {name}@{} failed:\n{out}", self.domain);
    }
}

/// Prosody 0.12 on loopback: its own configuration, data and log in a temp dir.
struct Prosody {
    _proc: Proc,
    _dir: tempfile::TempDir,
    port: u16,
    s2s_port: u16,
    ca: PathBuf,
    domain: &'static str,
}

impl Prosody {
    /// Starts Prosody for `domain` with a certificate from `ca` (which it also trusts for peers),
    /// requiring encryption and authenticated peers on s2s, with `users` (name, password).
    fn start(domain: &'static str, ca: &TestCa, users: &[(&str, &str)]) -> Prosody {
        assert!(
            Path::new(PROSODY).exists(),
            "Prosody is missing: apt-get install prosody"
        );
        let dir = snikket_testkit::temp_dir();
        let d = dir.path();
        let conference = format!("conference.{domain}");
        let leaf = ca.leaf(&[domain, conference.as_str()]);
        std::fs::write(d.join("cert.pem"), &leaf.fullchain_pem).unwrap();
        std::fs::write(d.join("key.pem"), &leaf.key_pem).unwrap();
        let ca_path = d.join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::create_dir_all(d.join("certs")).unwrap();
        let (port, s2s_port) = (free_port(), free_port());
        let p = d.display();
        // run_as_root: the tests may run as root, and Prosody would otherwise switch to its own
        // user, who cannot enter the temp dir.
        let config = format!(
            r#"-- Test configuration: loopback only, encryption and certificates required on s2s.
run_as_root = true
pidfile = "{p}/prosody.pid"
data_path = "{p}/data"
plugin_paths = {{ }}
log = {{ debug = "{p}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {s2s_port} }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence"; "message"; "iq"; "s2s_bidi"; "offline" }}
modules_disabled = {{ }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = true
authentication = "internal_hashed"
allow_registration = false
storage = "internal"
ssl = {{ certificate = "{p}/cert.pem"; key = "{p}/key.pem"; cafile = "{p}/ca.pem" }}
certificates = "{p}/certs"
muc_room_locking = false
VirtualHost "{domain}"
Component "conference.{domain}" "muc"
"#
        );
        let cfg = d.join("prosody.cfg.lua");
        std::fs::write(&cfg, config).unwrap();
        for (user, password) in users {
            let out = Command::new(PROSODYCTL)
                .arg("--config")
                .arg(&cfg)
                .args(["register", *user, domain, *password])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "prosodyctl register {user}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cmd = Command::new(PROSODY);
        cmd.arg("--config").arg(&cfg).arg("-F");
        let out = d.join("prosody.out");
        let mut proc = Proc::spawn(
            "prosody",
            cmd,
            &out,
            vec![out.clone(), d.join("prosody.log")],
        );
        proc.wait_for_port(port, "c2s");
        proc.wait_for_port(s2s_port, "s2s");
        Prosody {
            _proc: proc,
            _dir: dir,
            port,
            s2s_port,
            ca: ca_path,
            domain,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            port: self.port,
            ca: self.ca.clone(),
            domain: self.domain.to_string(),
        }
    }
}

/// Runs a client scenario for users on `first` (`--user`, `--user3`) and, in federation
/// scenarios, `second` (`--user2`). Returns whether it succeeded and everything it printed.
fn client(
    scenario: &str,
    first: &Endpoint,
    second: Option<&Endpoint>,
    args: &[&str],
) -> (bool, String) {
    assert!(
        Path::new(PYTHON).exists()
            && Command::new(PYTHON)
                .args(["-c", "import slixmpp"])
                .output()
                .unwrap()
                .status
                .success(),
        "slixmpp is missing: apt-get install python3-slixmpp"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/xmpp_client.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script)
        .arg(scenario)
        .arg("--port")
        .arg(first.port.to_string())
        .arg("--ca")
        .arg(&first.ca)
        .arg("--domain")
        .arg(&first.domain)
        .args(["--timeout", TIMEOUT]);
    if let Some(s) = second {
        cmd.arg("--port2")
            .arg(s.port.to_string())
            .arg("--ca2")
            .arg(&s.ca)
            .arg("--domain2")
            .arg(&s.domain);
    }
    let out = cmd.args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Shown with --nocapture, or with the failure.
    println!("{scenario}: {}", stdout.trim());
    (out.status.success(), format!("{stdout}\n{stderr}"))
}

/// Runs a federation scenario for alice on `a` and bob on `b`, with `extra` arguments.
fn alice_and_bob(scenario: &str, a: &Endpoint, b: &Endpoint, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "--user",
        ALICE.0,
        "--password",
        ALICE.1,
        "--user2",
        BOB.0,
        "--password2",
        BOB.1,
    ];
    args.extend_from_slice(extra);
    client(scenario, a, Some(b), &args)
}

/// `a.test` and `b.test`, each routed to the other, both trusting `ca`.
fn pair(ca: &TestCa) -> (Server, Server) {
    let (pa, pb) = (free_port(), free_port());
    let a = start(
        "a.test",
        ca,
        &[ca],
        pa,
        &[("b.test", pb), ("groups.b.test", pb)],
    );
    let b = start(
        "b.test",
        ca,
        &[ca],
        pb,
        &[("a.test", pa), ("groups.a.test", pa)],
    );
    (a, b)
}

const ALICE: (&str, &str) = ("alice", "correct horse battery");
const BOB: (&str, &str) = ("bob", "battery staple horse");

#[test]
fn two_of_our_servers_federate() {
    let ca = TestCa::new();
    let (a, b) = pair(&ca);
    a.user(ALICE.0, ALICE.1, &[]);
    b.user(BOB.0, BOB.1, &[]);
    // alice subscribes first (a.test opens the first link), bob approves and subscribes back;
    // presence, chat and pings both ways; bob leaves, alice writes, bob comes back to it.
    let (ok, out) = alice_and_bob(
        "federate",
        &a.endpoint(),
        &b.endpoint(),
        &["--offline", "b", "--mam", "ab"],
    );
    assert!(ok && out.contains("OK federation"), "{out}");
}

#[test]
fn federation_with_prosody() {
    let ca = TestCa::new();
    let pat = ("pat", "pat's prosody password");
    let p = Prosody::start("prosody.test", &ca, &[pat]);
    // Prosody finds other servers only through DNS: ours connects out, and Prosody answers on
    // that same stream (XEP-0288).
    let a = start(
        "a.test",
        &ca,
        &[&ca],
        free_port(),
        &[("prosody.test", p.s2s_port)],
    );
    a.user(ALICE.0, ALICE.1, &[]);
    // alice goes offline: Prosody's message reaches her through our offline storage.
    let (ok, out) = client(
        "federate",
        &a.endpoint(),
        Some(&p.endpoint()),
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--user2",
            pat.0,
            "--password2",
            pat.1,
            // Prosody 0.12 stores SCRAM-SHA-1 only.
            "--mech2",
            "SCRAM-SHA-1",
            "--offline",
            "a",
            "--mam",
            "a",
        ],
    );
    assert!(ok && out.contains("OK federation"), "{out}");
}

#[test]
fn our_users_join_group_chats_on_prosody() {
    let ca = TestCa::new();
    let pat = ("pat", "pat's prosody password");
    let p = Prosody::start("prosody.test", &ca, &[pat]);
    let a = start(
        "a.test",
        &ca,
        &[&ca],
        free_port(),
        &[
            ("prosody.test", p.s2s_port),
            ("conference.prosody.test", p.s2s_port),
        ],
    );
    a.user(ALICE.0, ALICE.1, &[]);
    let (ok, out) = client(
        "federate_muc",
        &a.endpoint(),
        Some(&p.endpoint()),
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--user2",
            pat.0,
            "--password2",
            pat.1,
            "--mech2",
            "SCRAM-SHA-1",
            "--group",
            "family@conference.prosody.test",
        ],
    );
    assert!(ok && out.contains("OK federated group chat"), "{out}");
}

#[test]
fn push_notifications_reach_an_app_server_on_another_domain() {
    let ca = TestCa::new();
    let (a, b) = pair(&ca);
    a.user(ALICE.0, ALICE.1, &[]);
    a.user("carl", "a passphrase of his own", &[]);
    b.user("pusher", "velvet comet anchor", &[]);
    let (ok, out) = client(
        "federate_push",
        &a.endpoint(),
        Some(&b.endpoint()),
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--user2",
            "pusher",
            "--password2",
            "velvet comet anchor",
            "--user3",
            "carl",
            "--password3",
            "a passphrase of his own",
        ],
    );
    assert!(ok && out.contains("OK federated push"), "{out}");
}

#[test]
fn personal_eventing_reaches_contacts_on_another_server() {
    let ca = TestCa::new();
    let (a, b) = pair(&ca);
    a.user(ALICE.0, ALICE.1, &[]);
    b.user(BOB.0, BOB.1, &[]);
    let (ok, out) = alice_and_bob("federate_pep", &a.endpoint(), &b.endpoint(), &[]);
    assert!(ok && out.contains("OK federated pep"), "{out}");
}

#[test]
fn people_on_other_servers_join_our_group_chats() {
    let ca = TestCa::new();
    let (a, b) = pair(&ca);
    a.user(ALICE.0, ALICE.1, &[]);
    b.user(BOB.0, BOB.1, &[]);
    let (ok, out) = alice_and_bob(
        "federate_room",
        &a.endpoint(),
        &b.endpoint(),
        &["--group", "family@groups.a.test"],
    );
    assert!(ok && out.contains("OK federated room"), "{out}");
}

#[test]
fn untrusted_peer_is_refused() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let (pa, pc) = (free_port(), free_port());
    let a = start("a.test", &ca, &[&ca], pa, &[("c.test", pc)]);
    // c.test trusts a.test's certificate authority, a.test does not trust c.test's: each
    // direction fails only because of a.test's verdict.
    let c = start("c.test", &other, &[&ca, &other], pc, &[("a.test", pa)]);
    a.user(ALICE.0, ALICE.1, &[]);
    c.user("carol", "untrusted password here", &[]);
    let (ok, out) = client(
        "federate_refused",
        &a.endpoint(),
        Some(&c.endpoint()),
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--user2",
            "carol",
            "--password2",
            "untrusted password here",
        ],
    );
    assert!(ok && out.contains("OK refused both ways"), "{out}");
}

#[test]
fn limited_users_cannot_reach_remote_domains() {
    let ca = TestCa::new();
    let (a, b) = pair(&ca);
    a.user("hal", "limited user password", &["--role", "limited"]);
    a.user(ALICE.0, ALICE.1, &[]);
    b.user(BOB.0, BOB.1, &[]);
    let (ok, out) = client(
        "limited_remote",
        &a.endpoint(),
        Some(&b.endpoint()),
        &[
            "--user",
            "hal",
            "--password",
            "limited user password",
            "--user2",
            BOB.0,
            "--password2",
            BOB.1,
            "--user3",
            ALICE.0,
            "--password3",
            ALICE.1,
        ],
    );
    assert!(ok && out.contains("OK limited user refused"), "{out}");
}

// ---- Raw server streams ----

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn s2s_header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{to}' version='1.0'>"
    )
}

/// Reads until one of `ends` arrives, EOF, an error or the read timeout (and prints it).
fn read_until_any<R: Read>(r: &mut R, ends: &[&str]) -> String {
    read_until(r, |text| ends.iter().any(|e| text.contains(e)))
}

/// Reads until `done` holds for what was read, EOF, an error or the read timeout (and prints it).
fn read_until<R: Read>(r: &mut R, done: impl Fn(&str) -> bool) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if done(&String::from_utf8_lossy(&out)) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    println!("<<< {text}");
    text
}

/// Reads the stream features: up to their end tag, or their start tag if it is self-closing.
fn read_features<R: Read>(r: &mut R) -> String {
    read_until(r, |text| {
        let Some(start) = ["<stream:features", "<features"]
            .iter()
            .filter_map(|p| text.find(p))
            .min()
        else {
            return text.contains("</stream:stream>");
        };
        let tag = &text[start..];
        tag.find('>').is_some_and(|end| tag[..end].ends_with('/'))
            || tag.contains("</stream:features>")
            || tag.contains("</features>")
    })
}
const STREAM_END: &[&str] = &["</stream:stream>"];

/// The condition of the first stream error in `out` (prefixed or in the streams namespace).
fn stream_error_condition(out: &str) -> Option<&str> {
    let start = [
        "<stream:error",
        "<error xmlns='http://etherx.jabber.org/streams'",
    ]
    .iter()
    .filter_map(|p| out.find(p))
    .min()?;
    let rest = &out[start..];
    let rest = &rest[rest.find('>')? + 1..];
    let rest = rest.strip_prefix('<')?;
    Some(&rest[..rest.find([' ', '/', '>'])?])
}

/// The `type` of the first dialback `<result/>` in `out`.
fn dialback_type(out: &str) -> Option<&str> {
    let start = out
        .find("<db:result")
        .or_else(|| out.find("<result xmlns='jabber:server:dialback'"))
        .or_else(|| out.find("<result xmlns=\"jabber:server:dialback\""))?;
    let tag = &out[start..];
    let tag = &tag[..tag.find('>')?];
    let at = tag.find(" type=")? + " type=".len();
    let quote = tag[at..].chars().next()?;
    let value = &tag[at + 1..];
    Some(&value[..value.find(quote)?])
}

/// Opens a server stream from `from` to `a`'s s2s port and goes through STARTTLS, presenting
/// `cert` (a leaf, sent with its chain) if given. Returns the TLS stream with the restarted
/// stream's features read, the features before TLS and those after (empty if the server ended
/// the connection).
fn s2s_tls(
    a: &Server,
    from: &str,
    cert: Option<&snikket_testkit::ca::Leaf>,
) -> (Tls, String, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", a.s2s_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(s2s_header(from, a.domain).as_bytes())
        .unwrap();
    let plain = read_features(&mut tcp);
    assert!(
        plain.contains("<starttls") && plain.contains("urn:ietf:params:xml:ns:xmpp-tls"),
        "no STARTTLS offered on s2s: {plain}"
    );
    assert!(
        plain.contains("required"),
        "STARTTLS is not required on s2s: {plain}"
    );
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .unwrap();
    let proceed = read_until_any(&mut tcp, &["proceed"]);
    assert!(proceed.contains("proceed"), "STARTTLS refused: {proceed}");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&a.ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(leaf.fullchain_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(a.domain.to_string()).unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // The server may refuse a client certificate: the features are then missing.
    if let Err(e) = tls.write_all(s2s_header(from, a.domain).as_bytes()) {
        return (tls, plain, format!("TLS failed: {e}"));
    }
    let features = read_features(&mut tls);
    (tls, plain, features)
}

/// SASL EXTERNAL as `domain` on a stream after TLS; returns the server's answer and, on success,
/// the features of the restarted stream.
fn sasl_external(tls: &mut Tls, domain: &str, to: &str) -> String {
    use base64::Engine;
    let authzid = base64::engine::general_purpose::STANDARD.encode(domain);
    tls.write_all(
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut out = read_until_any(
        tls,
        &["success", "failure>", "failure/>", "</stream:stream>"],
    );
    if out.contains("<success") {
        tls.write_all(s2s_header(domain, to).as_bytes()).unwrap();
        out.push_str(&read_features(tls));
    }
    out
}

#[test]
fn unsolicited_dialback_and_spoofed_from_are_refused() {
    let ca = TestCa::new();
    let a = start("a.test", &ca, &[&ca], free_port(), &[]);
    a.user(ALICE.0, ALICE.1, &[]);

    // A stanza before STARTTLS.
    let mut tcp = TcpStream::connect(("127.0.0.1", a.s2s_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let plain = format!(
        "{}<message from='x@evil.test' to='alice@a.test' type='chat'><body>plain spoof</body></message>",
        s2s_header("evil.test", "a.test")
    );
    tcp.write_all(plain.as_bytes()).unwrap();
    let out = read_until_any(&mut tcp, STREAM_END);
    assert_eq!(
        stream_error_condition(&out),
        Some("policy-violation"),
        "a stanza before STARTTLS: {out}"
    );

    // TLS without a certificate: no EXTERNAL, and a dialback result nobody asked for
    // authenticates nothing.
    let (mut tls, _, features) = s2s_tls(&a, "evil.test", None);
    assert!(
        features.contains("features") && !features.contains("EXTERNAL"),
        "SASL EXTERNAL offered to a peer without a certificate: {features}"
    );
    tls.write_all(
        b"<db:result type='valid' from='evil.test' to='a.test'/>\
          <message from='x@evil.test' to='alice@a.test' type='chat'><body>spoof after dialback</body></message>",
    )
    .unwrap();
    let out = read_until_any(&mut tls, STREAM_END);
    assert_eq!(
        stream_error_condition(&out),
        Some("not-authorized"),
        "a message after an unsolicited dialback result: {out}"
    );

    // A trusted peer (a certificate for b.test from the trusted CA) authenticates with SASL
    // EXTERNAL; its own user's message goes through, one from a domain it did not authenticate
    // ends the stream.
    let leaf = ca.leaf(&["b.test"]);
    let (mut tls, _, features) = s2s_tls(&a, "b.test", Some(&leaf));
    assert!(
        features.contains("<mechanism>EXTERNAL</mechanism>"),
        "no SASL EXTERNAL for a peer with a valid certificate: {features}"
    );
    let out = sasl_external(&mut tls, "b.test", "a.test");
    assert!(out.contains("<success"), "SASL EXTERNAL as b.test: {out}");
    tls.write_all(
        b"<message from='mallory@b.test/x' to='alice@a.test' type='chat' id='m1'><body>legit over s2s</body></message>\
          <message from='x@evil.test' to='alice@a.test' type='chat' id='m2'><body>spoofed over s2s</body></message>",
    )
    .unwrap();
    let out = read_until_any(&mut tls, STREAM_END);
    assert_eq!(
        stream_error_condition(&out),
        Some("invalid-from"),
        "a stanza from a domain the peer did not authenticate: {out}"
    );

    // alice, offline all along, finds only the legitimate message (offline storage or archive).
    let (ok, out) = client(
        "inbox",
        &a.endpoint(),
        None,
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--present",
            "legit over s2s",
            "--absent",
            "plain spoof",
            "--absent",
            "spoof after dialback",
            "--absent",
            "spoofed over s2s",
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn dialback_without_dialback_needs_a_valid_certificate() {
    let ca = TestCa::new();
    let a = start("a.test", &ca, &[&ca], free_port(), &[]);
    a.user(ALICE.0, ALICE.1, &[]);
    let key = "<db:result from='b.test' to='a.test'>37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643</db:result>";

    // A dialback request with a valid certificate for the domain is granted at once.
    let leaf = ca.leaf(&["b.test"]);
    let (mut tls, _, _) = s2s_tls(&a, "b.test", Some(&leaf));
    tls.write_all(key.as_bytes()).unwrap();
    let out = read_until_any(&mut tls, &["result>", "result/>", "</stream:stream>"]);
    assert_eq!(dialback_type(&out), Some("valid"), "{out}");
    tls.write_all(
        b"<message from='mallory@b.test/x' to='alice@a.test' type='chat'><body>after dialback</body></message>",
    )
    .unwrap();

    // Without a certificate the same request is not granted, nor is a domain the certificate
    // does not name.
    for (cert, from) in [(None, "b.test"), (Some(&leaf), "evil.test")] {
        let (mut tls, _, _) = s2s_tls(&a, from, cert);
        // A refused request need not end the stream: do not wait long for that.
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        tls.write_all(key.replace("b.test", from).as_bytes())
            .unwrap();
        let out = read_until_any(&mut tls, &["result>", "result/>", "</stream:stream>"]);
        assert_ne!(
            dialback_type(&out),
            Some("valid"),
            "dialback granted for {from} with certificate {:?}: {out}",
            cert.is_some()
        );
        let spoof = format!(
            "<message from='x@{from}' to='alice@a.test' type='chat'><body>refused dialback {from}</body></message>"
        );
        let _ = tls.write_all(spoof.as_bytes());
        let _ = read_until_any(&mut tls, STREAM_END);
    }
    // Let the first stream's message be routed before alice looks.
    std::thread::sleep(Duration::from_millis(300));
    drop(tls);
    let (ok, out) = client(
        "inbox",
        &a.endpoint(),
        None,
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--present",
            "after dialback",
            "--absent",
            "refused dialback b.test",
            "--absent",
            "refused dialback evil.test",
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn an_incoming_bidi_stream_carries_our_stanzas_back() {
    let ca = TestCa::new();
    // No route to b.test: what alice writes there can only leave on b.test's own stream.
    let a = start("a.test", &ca, &[&ca], free_port(), &[]);
    a.user(ALICE.0, ALICE.1, &[]);
    let leaf = ca.leaf(&["b.test"]);
    let (mut tls, _, features) = s2s_tls(&a, "b.test", Some(&leaf));
    assert!(
        features.contains("urn:xmpp:features:bidi"),
        "no bidi (XEP-0288) offered: {features}"
    );
    // Requested before authenticating, as Prosody does.
    tls.write_all(b"<bidi xmlns='urn:xmpp:bidi'/>").unwrap();
    let out = sasl_external(&mut tls, "b.test", "a.test");
    assert!(out.contains("<success"), "SASL EXTERNAL as b.test: {out}");
    let (ok, out) = client(
        "send",
        &a.endpoint(),
        None,
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--to",
            "bob@b.test",
            "--body",
            "back on the bidi stream",
        ],
    );
    assert!(ok, "{out}");
    let out = read_until_any(&mut tls, &["</message>"]);
    assert!(
        out.contains("back on the bidi stream")
            && out.contains("from='alice@a.test/")
            && out.contains("to='bob@b.test'"),
        "alice's message did not come back on b.test's stream: {out}"
    );
}

/// Tries to get a message from mallory@b.test to alice in on a stream presenting `leaf`: SASL
/// EXTERNAL, else a dialback request, and the message whatever the answers were. Returns what
/// the server said.
fn as_peer(a: &Server, leaf: &snikket_testkit::ca::Leaf, body: &str) -> String {
    let (mut tls, _, features) = s2s_tls(a, "b.test", Some(leaf));
    if !features.contains("features") {
        return features;
    }
    // Streams that are refused need not end: do not wait long for that.
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut out = features;
    let external = sasl_external(&mut tls, "b.test", "a.test");
    out.push_str(&external);
    if !external.contains("<success") {
        let _ = tls.write_all(
            b"<db:result from='b.test' to='a.test'>5e2c1d08a3b1f0c7d9e6a4b2c8f0e1d3</db:result>",
        );
        out.push_str(&read_until_any(
            &mut tls,
            &["result>", "result/>", "</stream:stream>"],
        ));
    }
    let message = format!(
        "<message from='mallory@b.test/x' to='alice@a.test' type='chat'><body>{body}</body></message>"
    );
    let _ = tls.write_all(message.as_bytes());
    out.push_str(&read_until_any(&mut tls, STREAM_END));
    out
}

#[test]
fn peer_certificates_from_unknown_authorities_authenticate_nothing() {
    let ca = TestCa::new();
    let a = start("a.test", &ca, &[&ca], free_port(), &[]);
    a.user(ALICE.0, ALICE.1, &[]);
    let untrusted = [
        ("another CA", TestCa::new().leaf(&["b.test"])),
        ("self-signed", snikket_testkit::ca::self_signed(&["b.test"])),
    ];
    for (what, leaf) in &untrusted {
        let out = as_peer(&a, leaf, &format!("untrusted b.test ({what})"));
        assert!(
            !out.contains("<mechanism>EXTERNAL")
                && !out.contains("<success")
                && dialback_type(&out) != Some("valid"),
            "a certificate for b.test from {what} was offered EXTERNAL or authenticated: {out}"
        );
    }
    // The control: the same steps with a certificate from the trusted CA get the message in.
    let out = as_peer(&a, &ca.leaf(&["b.test"]), "trusted b.test");
    assert!(out.contains("<success"), "{out}");
    let (ok, out) = client(
        "inbox",
        &a.endpoint(),
        None,
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--present",
            "trusted b.test",
            "--absent",
            "untrusted b.test (another CA)",
            "--absent",
            "untrusted b.test (self-signed)",
        ],
    );
    assert!(ok, "{out}");
}

/// A server for `domain` that answers one stream after another with STARTTLS and a TLS
/// handshake presenting `leaf`, and reports for each connection whether the handshake completed
/// (and what the client sent then) or failed.
fn fake_peer(
    domain: &'static str,
    leaf: snikket_testkit::ca::Leaf,
) -> (u16, std::sync::mpsc::Receiver<String>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_slice_iter(leaf.fullchain_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let header = read_until(&mut tcp, |t| {
                t.find("<stream:stream")
                    .is_some_and(|i| t[i..].contains('>'))
            });
            let answer = format!(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
                 xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
                 from='{domain}' id='fake' version='1.0'><stream:features>\
                 <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
                 </stream:features>"
            );
            if !header.contains("<stream:stream") || tcp.write_all(answer.as_bytes()).is_err() {
                let _ = tx.send(format!("no stream: {header}"));
                continue;
            }
            let starttls = read_until_any(&mut tcp, &["/>", "</starttls>"]);
            if !starttls.contains("<starttls")
                || tcp
                    .write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                    .is_err()
            {
                let _ = tx.send(format!("no STARTTLS: {starttls}"));
                continue;
            }
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            let report = match tls.read(&mut buf) {
                Ok(n) => format!("TLS accepted, then: {}", String::from_utf8_lossy(&buf[..n])),
                Err(e) => format!("TLS refused: {e}"),
            };
            let _ = tx.send(report);
        }
    });
    (port, rx)
}

#[test]
fn outgoing_links_need_a_certificate_for_the_peer_domain() {
    let ca = TestCa::new();
    // c.test answers with a certificate from the trusted CA, but for b.test.
    let (wrong, wrong_reports) = fake_peer("c.test", ca.leaf(&["b.test"]));
    // The control: d.test answers with a certificate for d.test.
    let (right, right_reports) = fake_peer("d.test", ca.leaf(&["d.test"]));
    // Nothing listens for down.test.
    let down = free_port();
    let a = start(
        "a.test",
        &ca,
        &[&ca],
        free_port(),
        &[("c.test", wrong), ("d.test", right), ("down.test", down)],
    );
    a.user(ALICE.0, ALICE.1, &[]);
    let bounced = |to: &str| {
        let (ok, out) = client(
            "remote",
            &a.endpoint(),
            None,
            &["--user", ALICE.0, "--password", ALICE.1, "--to", to],
        );
        assert!(
            ok && (out.contains("remote-server-not-found")
                || out.contains("remote-server-timeout")),
            "the message to {to}: {out}"
        );
    };
    bounced("carol@c.test");
    let reports: Vec<String> = wrong_reports
        .recv_timeout(Duration::from_secs(2))
        .into_iter()
        .chain(wrong_reports.try_iter())
        .collect();
    assert!(!reports.is_empty(), "a.test never connected to c.test");
    assert!(
        reports.iter().all(|r| r.starts_with("TLS refused")),
        "a.test accepted a certificate for b.test as c.test: {reports:?}"
    );
    bounced("someone@down.test");
    // d.test's certificate is accepted: TLS completes and a.test opens the stream (the fake
    // peer goes no further, so this message bounces).
    let _ = client(
        "send",
        &a.endpoint(),
        None,
        &[
            "--user",
            ALICE.0,
            "--password",
            ALICE.1,
            "--to",
            "dave@d.test",
            "--body",
            "to d.test",
        ],
    );
    let report = right_reports
        .recv_timeout(Duration::from_secs(10))
        .expect("a.test never connected to d.test");
    assert!(
        report.starts_with("TLS accepted") && report.contains("to='d.test'"),
        "{report}"
    );
}

#[test]
fn links_come_back_after_the_peer_restarts() {
    let ca = TestCa::new();
    let (pa, pb) = (free_port(), free_port());
    let a = start("a.test", &ca, &[&ca], pa, &[("b.test", pb)]);
    let mut b = start("b.test", &ca, &[&ca], pb, &[("a.test", pa)]);
    a.user(ALICE.0, ALICE.1, &[]);
    b.user(BOB.0, BOB.1, &[]);
    let send = |body: &str| {
        let (ok, out) = client(
            "send",
            &a.endpoint(),
            None,
            &[
                "--user",
                ALICE.0,
                "--password",
                ALICE.1,
                "--to",
                "bob@b.test",
                "--body",
                body,
            ],
        );
        assert!(ok, "{out}");
    };
    // bob is offline throughout: b.test stores what arrives.
    send("before the crash");
    // Killed: the link to a.test ends without a closing stream.
    b.restart(true);
    send("after the crash");
    // Stopped: b.test may close its streams.
    b.restart(false);
    send("after the restart");
    let (ok, out) = client(
        "inbox",
        &b.endpoint(),
        None,
        &[
            "--user",
            BOB.0,
            "--password",
            BOB.1,
            "--present",
            "before the crash",
            "--present",
            "after the crash",
            "--present",
            "after the restart",
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn stanzas_without_addresses_are_improper_addressing() {
    let ca = TestCa::new();
    let a = start("a.test", &ca, &[&ca], free_port(), &[]);
    let leaf = ca.leaf(&["b.test"]);
    // RFC 6120 4.9.3.7: a stanza between servers lacking 'to' or 'from'.
    for stanza in [
        "<message to='alice@a.test' type='chat'><body>no from</body></message>",
        "<message from='mallory@b.test/x' type='chat'><body>no to</body></message>",
    ] {
        let (mut tls, _, _) = s2s_tls(&a, "b.test", Some(&leaf));
        let out = sasl_external(&mut tls, "b.test", "a.test");
        assert!(out.contains("<success"), "SASL EXTERNAL as b.test: {out}");
        tls.write_all(stanza.as_bytes()).unwrap();
        let out = read_until_any(&mut tls, STREAM_END);
        assert_eq!(
            stream_error_condition(&out),
            Some("improper-addressing"),
            "{stanza}: {out}"
        );
    }
}
