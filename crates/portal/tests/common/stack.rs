//! The real `snikket-server` and `snikket-portal` binaries on loopback, shared by the end-to-end
//! tests (`e2e.rs` with a plain HTTP client, `browser.rs` with headless Chromium).
//!
//! The server binary must be built first: `cargo build -p snikket-server`. It is looked up next to
//! the portal binary, so a `CARGO_TARGET_DIR` elsewhere works too.

use snikket_testkit::net::{free_port, wait_for_port};
use snikket_testkit::process::Child;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const PORTAL: &str = env!("CARGO_BIN_EXE_snikket-portal");
pub const DOMAIN: &str = "chat.example.com";

/// `snikket-server` from the same target directory as the portal binary under test.
pub fn server_binary() -> PathBuf {
    let bin = Path::new(PORTAL)
        .parent()
        .expect("the portal binary has a parent directory")
        .join("snikket-server");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p snikket-server`",
        bin.display()
    );
    bin
}

/// The shared environment of both processes.
pub fn env(cmd: &mut Command, data: &Path, grpc_port: u16, portal_port: u16) {
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SNIKKET_DOMAIN", DOMAIN)
        .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
        .env("SNIKKET_SITE_NAME", "The Family")
        .env("SNIKKET_LOGLEVEL", "warn")
        .env("SNIKKET_TWEAK_DATA_DIR", data)
        .env("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1")
        .env("SNIKKET_TWEAK_SERVER_GRPC_PORT", grpc_port.to_string())
        .env("SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_INTERFACE", "127.0.0.1")
        .env(
            "SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_PORT",
            portal_port.to_string(),
        );
}

/// The server's own listeners, each on a free loopback port.
fn server_env(cmd: &mut Command) {
    cmd.env("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1")
        .env("SNIKKET_TWEAK_C2S_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_S2S_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_S2S_PORT", free_port().to_string())
        .env("SNIKKET_PROXY65_PORT", free_port().to_string());
}

/// The token of the first `/invite/<token>/` link in `text` (HTML-escaped or not).
pub fn invite_token(text: &str) -> String {
    let text = text.replace("&#x2f;", "/");
    let start = text.find("/invite/").expect("an invite link") + "/invite/".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// A running server and portal sharing a temporary data directory, stopped on drop.
pub struct Stack {
    // Declared before `data`: the processes stop before their directory goes.
    _portal: Child,
    _server: Child,
    data: tempfile::TempDir,
    grpc_port: u16,
    portal_port: u16,
    /// `http://127.0.0.1:<portal port>`.
    pub base: String,
    /// A command-line admin invitation (`create-invite --admin`), made before the portal starts.
    pub admin_token: String,
}

impl Stack {
    /// Starts the server, creates the admin invitation and starts the portal; waits for both.
    pub fn start() -> Stack {
        let server = server_binary();
        let data = snikket_testkit::temp_dir();
        let (grpc_port, portal_port) = (free_port(), free_port());

        let mut cmd = Command::new(&server);
        env(&mut cmd, data.path(), grpc_port, portal_port);
        server_env(&mut cmd);
        let server_child = Child::spawn("snikket-server", cmd);
        wait_for_port(([127, 0, 0, 1], grpc_port).into(), Duration::from_secs(30));

        let mut cmd = Command::new(&server);
        env(&mut cmd, data.path(), grpc_port, portal_port);
        let out = cmd
            .args(["create-invite", "--admin"])
            .output()
            .expect("run create-invite");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin_token = invite_token(&String::from_utf8_lossy(&out.stdout));

        let mut cmd = Command::new(PORTAL);
        env(&mut cmd, data.path(), grpc_port, portal_port);
        let portal_child = Child::spawn("snikket-portal", cmd);
        wait_for_port(
            ([127, 0, 0, 1], portal_port).into(),
            Duration::from_secs(30),
        );

        Stack {
            _portal: portal_child,
            _server: server_child,
            data,
            grpc_port,
            portal_port,
            base: format!("http://127.0.0.1:{portal_port}"),
            admin_token,
        }
    }

    /// A command for `program` with the stack's environment (for the binaries' subcommands).
    #[allow(dead_code)] // Not every test file runs subcommands.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        env(&mut cmd, self.data.path(), self.grpc_port, self.portal_port);
        cmd
    }
}
