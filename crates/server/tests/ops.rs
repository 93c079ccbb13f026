//! The operator commands of the real `snikket-server` binary: firewall, doctor, backup, restore
//! and healthcheck, including a backup taken while the daemon runs and restored elsewhere.

use snikket_store::Store;
use snikket_testkit::{free_port, wait_for_port, Child, TestCa};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_snikket-server");

/// Environment of one instance: its data directory and loopback ports nobody else uses.
struct Instance {
    vars: Vec<(String, String)>,
    http_port: u16,
}

impl Instance {
    fn new(data: &Path) -> Instance {
        let http_port = free_port();
        let mut vars: Vec<(String, String)> = [
            ("SNIKKET_DOMAIN", "chat.example.com"),
            ("SNIKKET_ADMIN_EMAIL", "admin@example.com"),
            ("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1"),
            ("SNIKKET_TWEAK_IPV6", "0"),
            ("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1"),
            ("SNIKKET_TWEAK_GRPC_INTERFACE", "127.0.0.1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for var in [
            "SNIKKET_TWEAK_C2S_PORT",
            "SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT",
            "SNIKKET_TWEAK_S2S_PORT",
            "SNIKKET_PROXY65_PORT",
            "SNIKKET_TWEAK_SERVER_GRPC_PORT",
        ] {
            vars.push((var.to_string(), free_port().to_string()));
        }
        vars.push((
            "SNIKKET_TWEAK_INTERNAL_HTTP_PORT".into(),
            http_port.to_string(),
        ));
        vars.push(("SNIKKET_TWEAK_DATA_DIR".into(), data.display().to_string()));
        Instance { vars, http_port }
    }

    fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.vars.iter().cloned())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(Path::new(BIN), args)
            .output()
            .expect("run snikket-server")
    }

    fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(Path::new(BIN), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn snikket-server");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait snikket-server")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn token_of(stdout: &str) -> String {
    let rest = stdout
        .strip_prefix("\nYour invite link: https://chat.example.com/invite/")
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    rest.split('/').next().expect("token").to_string()
}

#[test]
fn firewall_prints_rules_and_answers_to_its_link_name() {
    let dir = snikket_testkit::temp_dir();
    let mut inst = Instance::new(dir.path());
    inst.set("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "50000");
    inst.set("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", "50999");
    inst.set("SNIKKET_TWEAK_HTTPS_PORT", "8443");
    let out = inst.run(&["firewall", "--nftables"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nft = text(&out.stdout);
    assert!(nft.contains("tcp dport { 80, 8443, "), "{nft}");
    assert!(
        nft.contains("udp dport { 3478, 5349, 50000-50999 }"),
        "{nft}"
    );

    // `docker exec snikket firewall --ufw` goes through a link named `firewall`.
    let link = dir.path().join("firewall");
    std::os::unix::fs::symlink(BIN, &link).expect("link");
    let out = inst.command(&link, &["--ufw"]).output().expect("run link");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ufw allow 50000:50999/udp"),
        "{}",
        text(&out.stdout)
    );

    let out = inst.run(&["firewall"]);
    assert!(!out.status.success(), "a format is required");
    let out = inst.run(&["firewall", "--ufw", "--nixos"]);
    assert!(!out.status.success(), "only one format at a time");
}

#[test]
fn doctor_names_what_answers_and_how_to_fix_what_does_not() {
    let dir = snikket_testkit::temp_dir();
    let mut inst = Instance::new(dir.path());
    let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open_port = open.local_addr().expect("addr").port().to_string();
    let closed_port = free_port().to_string();
    inst.set("SNIKKET_TWEAK_HTTPS_PORT", &open_port);
    inst.set("SNIKKET_TWEAK_C2S_PORT", &closed_port);
    inst.set("SNIKKET_TWEAK_TURNSERVER", "0");
    TestCa::new().write_live_dir(
        &dir.path().join("letsencrypt/live/chat.example.com"),
        &[
            "chat.example.com",
            "groups.chat.example.com",
            "share.chat.example.com",
        ],
    );
    let out = inst.run(&[
        "doctor",
        "--no-dns",
        "--address",
        "127.0.0.1",
        "--timeout",
        "2",
    ]);
    let report = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "closed ports are problems: {report}"
    );
    assert!(
        report.contains(&format!("[  ok] 127.0.0.1 {open_port}/tcp answers")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "[FAIL] 127.0.0.1 {closed_port}/tcp (XMPP clients) does not answer"
        )),
        "{report}"
    );
    assert!(
        report.contains("fix: Check that the snikket container is running"),
        "{report}"
    );
    assert!(
        report.contains("[  ok] the certificate is valid for"),
        "{report}"
    );
    assert!(
        !report.contains("3478"),
        "TURN disabled, not probed: {report}"
    );
}

#[test]
fn backup_while_running_then_restore_into_a_fresh_directory() {
    let a = snikket_testkit::temp_dir();
    let inst = Instance::new(a.path());
    let out = inst.run(&["create-invite", "--admin", "--group", "default"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = token_of(&text(&out.stdout));
    let live = a.path().join("letsencrypt/live/chat.example.com");
    TestCa::new().write_live_dir(&live, &["chat.example.com"]);

    // Not running yet: the health check fails, quietly naming why.
    let out = inst.run(&["healthcheck"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("not answering"),
        "{}",
        text(&out.stdout)
    );

    let daemon = Child::spawn("snikket-server", inst.command(Path::new(BIN), &["run"]));
    wait_for_port(
        ([127, 0, 0, 1], inst.http_port).into(),
        Duration::from_secs(20),
    );
    let out = inst.run(&["healthcheck"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(out.stdout.is_empty(), "quiet when healthy");

    // Backups while the daemon runs, to a file and to stdout.
    let backups = snikket_testkit::temp_dir();
    let file = backups.path().join("snikket.tar");
    let out = inst.run(&["backup", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("database included"),
        "{}",
        text(&out.stderr)
    );
    let out = inst.run(&["backup", file.to_str().expect("utf-8 path")]);
    assert!(
        !out.status.success(),
        "an existing backup is never overwritten"
    );
    let streamed = inst.run(&["backup", "-"]);
    assert!(streamed.status.success(), "{}", text(&streamed.stderr));
    let listing = Command::new("tar")
        .args(["-tf", file.to_str().expect("utf-8 path")])
        .output()
        .expect("tar");
    let listing = text(&listing.stdout);
    for entry in [
        "snikket/",
        "snikket/server/snikket.sqlite",
        "snikket/prosody/turn-auth-secret-v2",
    ] {
        assert!(
            listing.lines().any(|l| l == entry),
            "{entry} missing from {listing}"
        );
    }
    assert!(!listing.contains("snikket.sqlite-wal"), "{listing}");

    // Restoring over the running instance is refused.
    let out = inst.run(&["restore", "--force", file.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the server is running"),
        "{}",
        text(&out.stderr)
    );
    assert!(daemon.terminate().success());

    // Into a fresh directory (a new volume): everything comes back, the invite is still valid.
    let b = snikket_testkit::temp_dir();
    let fresh = b.path().join("snikket");
    let restored = Instance::new(&fresh);
    let out = restored.run_with_stdin(&["restore", "-"], &streamed.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for secret in ["prosody/turn-auth-secret-v2", "internal/grpc-secret"] {
        assert_eq!(
            std::fs::read(a.path().join(secret)).expect("original"),
            std::fs::read(fresh.join(secret)).expect("restored"),
            "{secret}"
        );
    }
    assert_eq!(
        std::fs::read(live.join("fullchain.pem")).expect("original"),
        std::fs::read(fresh.join("letsencrypt/live/chat.example.com/fullchain.pem"))
            .expect("restored")
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open_url(&format!(
            "sqlite://{}",
            fresh.join("server/snikket.sqlite").display()
        ))
        .await
        .expect("open restored database");
        let invite = store
            .check_invite(&token)
            .await
            .expect("query")
            .expect("invite survived");
        assert_eq!(invite.circles, vec!["default".to_string()]);
        store.close().await;
    });

    // A second restore over the restored data needs --force, and then works.
    let out = restored.run(&["restore", file.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let out = restored.run(&["restore", "--force", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
