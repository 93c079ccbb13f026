//! The server binary's command line against empty data directories, on every database backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use snikket_store::{InviteProblem, Role, Store};
use snikket_testkit::db::{backends, Backend, TestDb};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_snikket-server");

fn server(data: &Path, db: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SNIKKET_DOMAIN", "chat.example.com")
        .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
        .env("SNIKKET_SITE_NAME", "The Family")
        .env("SNIKKET_TWEAK_DATA_DIR", data)
        .args(args);
    if let Some(url) = db {
        cmd.env("SNIKKET_TWEAK_DATABASE_URL", url);
    }
    cmd.output().expect("run snikket-server")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn token_of(stdout: &str) -> String {
    let prefix = "\nYour invite link: https://chat.example.com/invite/";
    assert!(stdout.starts_with(prefix), "unexpected output {stdout:?}");
    let rest = &stdout[prefix.len()..];
    let (token, tail) = rest.split_once('/').expect("link ends with /");
    assert_eq!(tail, "\n\n", "exact trailing format");
    token.to_string()
}

#[tokio::test]
async fn create_invite_on_empty_data_dir_on_every_backend() {
    for backend in backends() {
        let dir = snikket_testkit::temp_dir();
        let db = TestDb::create(backend).await;
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(db.url.as_str()),
        };
        let out = server(
            dir.path(),
            url,
            &["create-invite", "--admin", "--group", "default"],
        );
        assert!(out.status.success(), "{backend:?}: {}", text(&out.stderr));
        let token = token_of(&text(&out.stdout));
        assert_eq!(token.len(), 24);

        let store = match backend {
            Backend::Sqlite => Store::open_url(&format!(
                "sqlite://{}",
                dir.path().join("server/snikket.sqlite").display()
            ))
            .await
            .unwrap(),
            Backend::Postgres => Store::open_url(&db.url).await.unwrap(),
        };
        let invite = store
            .check_invite(&token)
            .await
            .unwrap()
            .expect("token is valid");
        assert_eq!(invite.role, Role::Admin);
        assert_eq!(invite.circles, vec!["default".to_string()]);
        assert!(invite.expires_at - invite.created_at == 7 * 86_400);
        let default = store
            .circle("default")
            .await
            .unwrap()
            .expect("default circle");
        assert_eq!(default.name, "The Family");

        // A second run reuses the secrets and creates another distinct invite.
        let secret =
            std::fs::read_to_string(dir.path().join("prosody/turn-auth-secret-v2")).unwrap();
        let out2 = server(
            dir.path(),
            url,
            &[
                "create-invite",
                "--expires-after",
                "2d",
                "--role",
                "limited",
            ],
        );
        assert!(out2.status.success(), "{}", text(&out2.stderr));
        let token2 = token_of(&text(&out2.stdout));
        assert_ne!(token, token2);
        let inv2 = store.check_invite(&token2).await.unwrap().unwrap();
        assert_eq!(inv2.role, Role::Limited);
        assert_eq!(inv2.expires_at - inv2.created_at, 2 * 86_400);
        assert_eq!(
            secret,
            std::fs::read_to_string(dir.path().join("prosody/turn-auth-secret-v2")).unwrap()
        );

        // A guessed token with the right prefix is refused.
        let mut guessed = token.clone();
        guessed.replace_range(16.., "abcdefgh");
        assert_eq!(
            store.check_invite(&guessed).await.unwrap(),
            Err(InviteProblem::Invalid)
        );
        store.close().await;
    }
}

#[test]
fn secrets_are_created_once_with_safe_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = snikket_testkit::temp_dir();
    let out = server(dir.path(), None, &["create-invite"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for rel in ["prosody/turn-auth-secret-v2", "internal/grpc-secret"] {
        let p = dir.path().join(rel);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{rel}");
        let line = std::fs::read_to_string(&p).unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .unwrap();
        assert_eq!(raw.len(), 32, "{rel}");
        assert!(
            !text(&out.stdout).contains(line.trim()) && !text(&out.stderr).contains(line.trim())
        );
    }
    let a = std::fs::read(dir.path().join("internal/grpc-secret")).unwrap();
    let b = std::fs::read(dir.path().join("prosody/turn-auth-secret-v2")).unwrap();
    assert_ne!(a, b, "the two secrets are independent");
}

#[test]
fn qr_reset_and_errors() {
    let dir = snikket_testkit::temp_dir();
    let out = server(dir.path(), None, &["create-invite", "--qr"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n\nQR code for scanning:\n\n"), "{stdout}");
    assert!(stdout.lines().count() > 15);

    let out = server(dir.path(), None, &["create-invite", "--group", "Nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "No such circle: Nope");

    let out = server(
        dir.path(),
        None,
        &["create-invite", "--reset", "ghost@chat.example.com"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "No such user: ghost");

    let out = server(
        dir.path(),
        None,
        &["create-invite", "--expires-after", "soon"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "Unable to parse duration: soon");

    let out = server(dir.path(), None, &["create-invite", "--role", "king"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Unknown role: king"));

    let out = server(dir.path(), None, &["create-invite", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Usage:"),
        "{}",
        text(&out.stderr)
    );

    let out = server(
        dir.path(),
        None,
        &["create-invite", "--admin", "--reset", "bob"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "--reset excludes account options"
    );
}

#[tokio::test]
async fn reset_invite_for_existing_user() {
    let dir = snikket_testkit::temp_dir();
    let out = server(dir.path(), None, &["create-invite"]);
    assert!(out.status.success());
    let store = Store::open_url(&format!(
        "sqlite://{}",
        dir.path().join("server/snikket.sqlite").display()
    ))
    .await
    .unwrap();
    store
        .create_account("bob", Role::Normal, &[], None)
        .await
        .unwrap();
    let out = server(
        dir.path(),
        None,
        &["create-invite", "--reset", "bob@chat.example.com"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = token_of(&text(&out.stdout));
    let invite = store.check_invite(&token).await.unwrap().unwrap();
    assert_eq!(invite.username.as_deref(), Some("bob"));
    assert_eq!(invite.expires_at - invite.created_at, 86_400);
    let out = server(
        dir.path(),
        None,
        &["create-invite", "--reset", "bob@elsewhere.example"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn config_errors_stop_with_snikket_wording() {
    let dir = snikket_testkit::temp_dir();
    let out = Command::new(BIN)
        .env_clear()
        .env("SNIKKET_TWEAK_DATA_DIR", dir.path())
        .env("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "80")
        .args(["create-invite"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Please provide SNIKKET_DOMAIN"), "{err}");
    assert!(err.contains("Please provide SNIKKET_ADMIN_EMAIL"), "{err}");
    assert!(
        err.contains(
            "SNIKKET_TWEAK_TURNSERVER_MIN_PORT=\"80\": must be an integer with 1024 < port ≤ 65535"
        ),
        "{err}"
    );
}

#[test]
fn invoked_as_create_invite_through_a_link() {
    let dir = snikket_testkit::temp_dir();
    let link = dir.path().join("create-invite");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let data = dir.path().join("data");
    let out = Command::new(&link)
        .env_clear()
        .env("SNIKKET_DOMAIN", "chat.example.com")
        .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
        .env("SNIKKET_TWEAK_DATA_DIR", &data)
        .args(["--admin", "--group", "default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    token_of(&text(&out.stdout));
}

#[tokio::test]
async fn daemon_serves_health_and_stops_on_sigterm() {
    let dir = snikket_testkit::temp_dir();
    let port = snikket_testkit::free_port();
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("SNIKKET_DOMAIN", "chat.example.com")
        .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
        .env("SNIKKET_TWEAK_DATA_DIR", dir.path())
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1")
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", port.to_string())
        .env(
            "SNIKKET_TWEAK_SERVER_GRPC_PORT",
            snikket_testkit::free_port().to_string(),
        )
        .env("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1")
        .env(
            "SNIKKET_TWEAK_C2S_PORT",
            snikket_testkit::free_port().to_string(),
        )
        .env(
            "SNIKKET_TWEAK_S2S_PORT",
            snikket_testkit::free_port().to_string(),
        )
        .env(
            "SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT",
            snikket_testkit::free_port().to_string(),
        );
    let child = snikket_testkit::Child::spawn("snikket-server", cmd);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    snikket_testkit::wait_for_port(addr, std::time::Duration::from_secs(30));
    let body = reqwest::get(format!("http://127.0.0.1:{port}/host_status_check"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "STATUS OK\n");
    let status = child.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}
