//! End-to-end tests of the real `snikket-web-proxy` binary with reqwest, curl and tokio-tungstenite
//! against stub portal and server backends on loopback (spec 6.2, 6.3, 6.5; checklist 93–106).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::Request;
use axum::routing::{any, get};
use axum::Router;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use snikket_testkit::{free_port, temp_dir, wait_for_port, Child, TestCa};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAIN: &str = "chat.example.test";
const GROUPS: &str = "groups.chat.example.test";
const SHARE: &str = "share.chat.example.test";

// ---------------------------------------------------------------- stub backends

/// Answers every request with a description of what arrived, counting (not storing) the body.
async fn echo(tag: &'static str, req: Request) -> String {
    let h = req.headers().clone();
    let get = |n: &str| {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
            .join("|")
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut stream = req.into_body().into_data_stream();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => len += c.len(),
            Err(_) => break,
        }
    }
    format!(
        "backend={tag}\npath={pq}\nhost={}\nxff={}\nxfp={}\nlen={len}\n",
        get("host"),
        get("x-forwarded-for"),
        get("x-forwarded-proto")
    )
}

async fn ws_echo(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

async fn start_stub(tag: &'static str) -> u16 {
    let app = Router::new()
        .route("/xmpp-websocket", get(ws_echo))
        .fallback(any(move |req: Request| echo(tag, req)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    port
}

// ---------------------------------------------------------------- the proxy under test

struct Proxy {
    child: Child,
    data: tempfile::TempDir,
    challenges: PathBuf,
    http: u16,
    https: u16,
    ca: TestCa,
    /// The environment the proxy was started with, for its sub-commands.
    env: Vec<(String, String)>,
}

impl Proxy {
    fn live_dir(&self) -> PathBuf {
        self.data.path().join("letsencrypt/live").join(DOMAIN)
    }

    fn write_cert(&self) {
        self.ca
            .write_live_dir(&self.live_dir(), &[DOMAIN, GROUPS, SHARE]);
    }

    fn has_errors(&self) -> PathBuf {
        self.data.path().join("letsencrypt/has-errors")
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https)
    }

    fn http_url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.http)
    }

    fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap(),
            );
        for name in [DOMAIN, GROUPS, SHARE, "unknown.example.test"] {
            b = b.resolve(name, SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        b
    }

    /// Peak resident memory of the proxy process in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }
}

fn start_proxy(portal: u16, server: u16, with_cert: bool, extra: &[(&str, &str)]) -> Proxy {
    let data = temp_dir();
    let challenges = data.path().join("acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    let ca = TestCa::new();
    if with_cert {
        ca.write_live_dir(
            &data.path().join("letsencrypt/live").join(DOMAIN),
            &[DOMAIN, GROUPS, SHARE],
        );
    }
    let http = free_port();
    let https = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("SNIKKET_DOMAIN".into(), DOMAIN.into()),
        ("SNIKKET_ADMIN_EMAIL".into(), "admin@example.test".into()),
        (
            "SNIKKET_TWEAK_DATA_DIR".into(),
            data.path().display().to_string(),
        ),
        ("SNIKKET_TWEAK_BIND_INTERFACES".into(), "127.0.0.1".into()),
        ("SNIKKET_TWEAK_HTTP_PORT".into(), http.to_string()),
        ("SNIKKET_TWEAK_HTTPS_PORT".into(), https.to_string()),
        (
            "SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_HOST".into(),
            "127.0.0.1".into(),
        ),
        (
            "SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_PORT".into(),
            portal.to_string(),
        ),
        (
            "SNIKKET_TWEAK_INTERNAL_HTTP_HOST".into(),
            "127.0.0.1".into(),
        ),
        (
            "SNIKKET_TWEAK_INTERNAL_HTTP_PORT".into(),
            server.to_string(),
        ),
        (
            "SNIKKET_TWEAK_ACME_CHALLENGE_DIR".into(),
            challenges.display().to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snikket-web-proxy"));
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    if std::env::var_os("PROXY_TEST_LOG").is_none() {
        cmd.stdout(Stdio::null());
    }
    let child = Child::spawn("snikket-web-proxy", cmd);
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], http)),
        Duration::from_secs(20),
    );
    Proxy {
        child,
        data,
        challenges,
        http,
        https,
        ca,
        env,
    }
}

async fn started(with_cert: bool) -> Proxy {
    let portal = start_stub("portal").await;
    let server = start_stub("server").await;
    start_proxy(portal, server, with_cert, &[])
}

fn field(body: &str, name: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {body:?}"))
        .to_string()
}

// ---------------------------------------------------------------- curl

fn curl_raw(proxy: &Proxy, args: &[&str]) -> String {
    let ca = proxy.data.path().join("ca.pem");
    std::fs::write(&ca, proxy.ca.cert_pem()).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "30", "--cacert"])
        .arg(&ca);
    for name in [DOMAIN, GROUPS, SHARE, "unknown.example.test"] {
        for port in [proxy.http, proxy.https] {
            cmd.arg("--resolve").arg(format!("{name}:{port}:127.0.0.1"));
        }
    }
    cmd.args(args);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl is not installed: apt-get install -y curl")
        }
        Err(e) => panic!("running curl: {e}"),
    };
    if !out.stderr.is_empty() {
        eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs curl; returns the status code (0 when no response) and the body.
fn curl(proxy: &Proxy, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-o", "/dev/stdout", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let text = curl_raw(proxy, &all);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_routes_headers_and_redirects() {
    let p = started(true).await;
    let c = p.client();
    // (host, path, status, backend, path seen by the backend)
    let table: &[(&str, &str, u16, Option<&str>, &str)] = &[
        (DOMAIN, "/", 200, Some("portal"), "/"),
        (DOMAIN, "/login", 200, Some("portal"), "/login"),
        (
            DOMAIN,
            "/admin/users?page=2",
            200,
            Some("portal"),
            "/admin/users?page=2",
        ),
        (DOMAIN, "/invite/abc/", 200, Some("portal"), "/invite/abc/"),
        (
            DOMAIN,
            "/.well-known/security.txt",
            200,
            Some("portal"),
            "/.well-known/security.txt",
        ),
        (DOMAIN, "/index.html", 200, Some("portal"), "/index.html"),
        (
            DOMAIN,
            "/_errors/502.html",
            200,
            Some("portal"),
            "/_errors/502.html",
        ),
        (
            DOMAIN,
            "/admin_api/users",
            200,
            Some("server"),
            "/admin_api/users",
        ),
        (DOMAIN, "/invites_api", 200, Some("server"), "/invites_api"),
        (
            DOMAIN,
            "/invites_bootstrap?token=t",
            200,
            Some("server"),
            "/invites_bootstrap?token=t",
        ),
        (
            DOMAIN,
            "/upload/slot/file.png",
            200,
            Some("server"),
            "/upload/slot/file.png",
        ),
        (DOMAIN, "/http-bind", 200, Some("server"), "/http-bind"),
        (
            DOMAIN,
            "/.well-known/host-meta",
            200,
            Some("server"),
            "/.well-known/host-meta",
        ),
        (
            DOMAIN,
            "/.well-known/host-meta.json",
            200,
            Some("server"),
            "/.well-known/host-meta.json",
        ),
        (DOMAIN, "/_health/portal", 200, Some("portal"), "/_health"),
        (
            DOMAIN,
            "/_health/xmpp",
            200,
            Some("server"),
            "/host_status_check",
        ),
        (DOMAIN, "/a/./b/../c", 200, Some("portal"), "/a/c"),
        (
            SHARE,
            "/upload/slot/f.jpg",
            200,
            Some("server"),
            "/upload/slot/f.jpg",
        ),
        (DOMAIN, "/oauth2/token", 404, None, ""),
        (DOMAIN, "/rest", 404, None, ""),
        (DOMAIN, "/register_api/x", 404, None, ""),
        (DOMAIN, "/xep227/export", 404, None, ""),
        (DOMAIN, "/metrics", 404, None, ""),
        (DOMAIN, "/%6fauth2/token", 404, None, ""),
        (DOMAIN, "/static/proxy/snikket.css", 200, None, ""),
        (SHARE, "/", 301, None, ""),
        (SHARE, "/login", 301, None, ""),
        (GROUPS, "/anything", 301, None, ""),
    ];
    for (host, path, status, backend, seen) in table {
        let resp = c
            .get(p.url(host, path))
            .header("x-forwarded-for", "6.6.6.6")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), *status, "{host}{path}");
        let h = resp.headers().clone();
        assert_eq!(
            h["strict-transport-security"], "max-age=63072000",
            "{host}{path}"
        );
        assert_eq!(h["server"], "Snikket", "{host}{path}");
        if *status == 301 {
            assert_eq!(h["location"], format!("https://{DOMAIN}/"), "{host}{path}");
        }
        let body = resp.text().await.unwrap();
        match backend {
            Some(b) => {
                assert_eq!(field(&body, "backend"), *b, "{host}{path}");
                assert_eq!(field(&body, "path"), *seen, "{host}{path}");
                assert_eq!(
                    field(&body, "host"),
                    format!("{host}:{}", p.https),
                    "{host}{path}"
                );
                // Untrusted peer: the spoofed address is dropped.
                assert_eq!(field(&body, "xff"), "127.0.0.1", "{host}{path}");
                assert_eq!(field(&body, "xfp"), "https", "{host}{path}");
            }
            None => assert!(!body.contains("backend="), "{host}{path} reached a backend"),
        }
        if *host == "unknown.example.test" {
            assert!(body.contains("Site not found"), "{body}");
        } else if *status == 404 {
            assert!(body.contains("Snikket") && body.contains("404"), "{body}");
        }
    }
    let r = c
        .get(p.url(DOMAIN, "/.well-known/host-meta"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = c.get(p.url(DOMAIN, "/login")).send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // HTTP/2 through ALPN, with curl.
    let out = curl_raw(
        &p,
        &[
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &p.url(DOMAIN, "/login"),
        ],
    );
    assert_eq!(out, "2 200");
    // Bodies over the default limit are refused before reaching the portal.
    let r = c
        .post(p.url(DOMAIN, "/login"))
        .body(vec![b'x'; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // The same without a length (chunked): cut off while streaming.
    let chunks = futures::stream::iter(0..3)
        .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1024 * 1024])));
    let r = c
        .post(p.url(DOMAIN, "/login"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn port_80_challenges_redirects_and_traversal() {
    let p = started(true).await;
    std::fs::write(p.challenges.join("tok-EN_123"), "tok-EN_123.thumbprint").unwrap();
    std::fs::write(p.data.path().join("secret.txt"), "TOP-SECRET").unwrap();
    std::fs::write(p.challenges.join(".hidden"), "TOP-SECRET").unwrap();
    let c = p.client();
    for host in [DOMAIN, GROUPS, SHARE] {
        let r = c
            .get(p.http_url(host, "/.well-known/acme-challenge/tok-EN_123"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.text().await.unwrap(), "tok-EN_123.thumbprint");
        let r = c
            .get(p.http_url(host, "/some/path?x=1&y=2"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 301);
        assert_eq!(
            r.headers()["location"],
            format!("https://{host}:{}/some/path?x=1&y=2", p.https)
        );
    }
    let r = c
        .get(p.http_url(DOMAIN, "/.well-known/acme-challenge/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Appendix A3 fixed: unknown hosts get the 404 page on port 80 too.
    let r = c
        .get(p.http_url("unknown.example.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("Site not found"));
    for attack in [
        "/.well-known/acme-challenge/../secret.txt",
        "/.well-known/acme-challenge/../../secret.txt",
        "/.well-known/acme-challenge/..%2fsecret.txt",
        "/.well-known/acme-challenge/%2e%2e%2fsecret.txt",
        "/.well-known/acme-challenge/%2e%2e/secret.txt",
        "/.well-known/acme-challenge/.hidden",
        "/.well-known/acme-challenge/..\\secret.txt",
        "/.well-known/acme-challenge//etc/passwd",
    ] {
        let (code, body) = curl(&p, &["--path-as-is", &p.http_url(DOMAIN, attack)]);
        assert!(
            !body.contains("TOP-SECRET") && !body.contains("root:"),
            "{attack}: {body}"
        );
        assert_ne!(code, 200, "{attack}");
    }
    // No Host header at all: 400.
    let (code, _) = curl(
        &p,
        &["-H", "Host:", &format!("http://127.0.0.1:{}/", p.http)],
    );
    assert_eq!(code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn startup_page_until_a_certificate_appears() {
    let p = started(false).await;
    let c = p.client();
    let r = c.get(p.http_url(DOMAIN, "/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("<title>Snikket is starting</title>"),
        "{body}"
    );
    assert!(body.contains("http-equiv=\"refresh\" content=\"10\""));
    assert!(!body.contains("Problem detected!"));
    std::fs::create_dir_all(p.has_errors().parent().unwrap()).unwrap();
    std::fs::write(p.has_errors(), "").unwrap();
    let body = c
        .get(p.http_url(DOMAIN, "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("Problem detected!"), "{body}");
    std::fs::remove_file(p.has_errors()).unwrap();
    let body = c
        .get(p.http_url(DOMAIN, "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("Problem detected!"));
    let r = c
        .get(p.http_url(DOMAIN, "/static/proxy/snikket.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let r = c.get(p.http_url(DOMAIN, "/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("couldn't find"));
    std::fs::write(p.challenges.join("early"), "early.key").unwrap();
    let r = c
        .get(p.http_url(SHARE, "/.well-known/acme-challenge/early"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "early.key");
    // No HTTPS yet.
    assert!(c.get(p.url(DOMAIN, "/")).send().await.is_err());

    p.write_cert();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = c.get(p.url(DOMAIN, "/login")).send().await {
            assert_eq!(r.status().as_u16(), 200);
            assert!(r.text().await.unwrap().contains("backend=portal"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS did not come up after the certificate appeared"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.get(p.http_url(DOMAIN, "/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("https://{DOMAIN}:{}/", p.https)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn branded_502_when_backends_are_down() {
    let (portal, server) = (free_port(), free_port());
    let p = start_proxy(portal, server, true, &[]);
    let c = p.client();
    for path in ["/login", "/http-bind", "/_health/xmpp"] {
        let r = c.get(p.url(DOMAIN, path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 502, "{path}");
        assert_eq!(r.headers()["strict-transport-security"], "max-age=63072000");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("A technical glitch") && body.contains("<code>502 Bad Gateway</code>"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_headers_are_refused() {
    let p = started(true).await;
    let big = "a".repeat(64 * 1024);
    let (code, _) = curl(
        &p,
        &[
            "--http1.1",
            "-H",
            &format!("X-Big: {big}"),
            &p.url(DOMAIN, "/login"),
        ],
    );
    assert_eq!(code, 431);
    let (code, _) = curl(
        &p,
        &["-H", &format!("X-Big: {big}"), &p.http_url(DOMAIN, "/")],
    );
    assert_eq!(code, 431);
    let (code, _) = curl(
        &p,
        &[
            "--http2",
            "-H",
            &format!("X-Big: {big}"),
            &p.url(DOMAIN, "/login"),
        ],
    );
    assert_ne!(code, 200, "HTTP/2 must refuse the header list too");
    let (code, body) = curl(
        &p,
        &[
            "-H",
            &format!("X-Ok: {}", "a".repeat(4096)),
            &p.url(DOMAIN, "/login"),
        ],
    );
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trusted_proxy_chain_is_kept() {
    let portal = start_stub("portal").await;
    let server = start_stub("server").await;
    let p = start_proxy(
        portal,
        server,
        true,
        &[("SNIKKET_TWEAK_TRUSTED_PROXIES", "127.0.0.1")],
    );
    let body = p
        .client()
        .get(p.url(DOMAIN, "/login"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(field(&body, "xff"), "198.51.100.7, 127.0.0.1");
    // SIGTERM: a clean exit.
    let Proxy { child, .. } = p;
    let status = child.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_header_senders_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = started(true).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.http))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: chat.example.test\r\nX-Slow: a")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    // The header read timeout is 20 s; 60 s bounds the wait.
    let r = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "a client that never finishes its headers kept the connection"
    );
}

fn tls_client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn tls_connect(
    p: &Proxy,
    cfg: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.https))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_echo_through_the_proxy() {
    let p = started(true).await;
    let tls = tls_connect(&p, tls_client_config(&p.ca.cert_pem())).await;
    let url = format!("wss://{DOMAIN}:{}/xmpp-websocket", p.https);
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .expect("websocket handshake timed out")
    .unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=63072000"
    );
    for i in 0..20 {
        let text = format!("<message id='{i}'/>");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo timed out")
            .unwrap()
            .unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_of_100_mib_is_streamed_with_bounded_memory() {
    let p = started(true).await;
    const SIZE: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let chunks = futures::stream::iter(0..SIZE / CHUNK)
        .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0x5a_u8; CHUNK])));
    let r = p
        .client()
        .put(p.url(SHARE, "/upload/slot/big.bin"))
        .header("content-length", SIZE.to_string())
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(field(&body, "len"), SIZE.to_string());
    let peak = p.peak_rss_kib();
    eprintln!("proxy peak RSS after a 100 MiB upload: {peak} KiB");
    assert!(
        peak < 48 * 1024,
        "proxy peak RSS {peak} KiB: the upload was buffered"
    );
    // One byte over the limit is refused up front.
    let tiny = p.data.path().join("tiny");
    std::fs::write(&tiny, "x").unwrap();
    let (code, _) = curl(
        &p,
        &[
            "--http1.1",
            "-X",
            "PUT",
            "-H",
            "Content-Length: 104857617",
            "--data-binary",
            &format!("@{}", tiny.display()),
            &p.url(SHARE, "/upload/slot/huge.bin"),
        ],
    );
    assert_eq!(code, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_swap_under_load_fails_no_request() {
    let p = Arc::new(started(true).await);
    let cfg = tls_client_config(&p.ca.cert_pem());
    let first = tls_connect(&p, cfg.clone())
        .await
        .get_ref()
        .1
        .peer_certificates()
        .unwrap()[0]
        .clone();
    // A keep-alive connection opened before the swap must survive it.
    let keep = p.client();
    assert_eq!(
        keep.get(p.url(DOMAIN, "/before"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (p, ok, failed, stop) = (p.clone(), ok.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            // No pooling: every request is a fresh TLS handshake.
            let c = p
                .client_builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            while !stop.is_cancelled() {
                match c.get(p.url(DOMAIN, "/load")).send().await {
                    Ok(r) if r.status().as_u16() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.write_cert();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = tls_connect(&p, cfg.clone())
            .await
            .get_ref()
            .1
            .peer_certificates()
            .unwrap()[0]
            .clone();
        if now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        keep.get(p.url(DOMAIN, "/after"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

/// The documented nginx example (`deploy/reverse-proxy/nginx.conf`) in front of the proxy, with
/// Debian's nginx: challenges over plain HTTP, redirects, and HTTPS with `Host`, `X-Forwarded-*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_the_documented_nginx_example() {
    let portal = start_stub("portal").await;
    let server = start_stub("server").await;
    let p = start_proxy(
        portal,
        server,
        true,
        &[("SNIKKET_TWEAK_TRUSTED_PROXIES", "127.0.0.1 ::1")],
    );
    let dir = p.data.path().join("nginx");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let leaf = p.ca.leaf(&[DOMAIN, GROUPS, SHARE]);
    std::fs::write(dir.join("fullchain.pem"), &leaf.fullchain_pem).unwrap();
    std::fs::write(dir.join("privkey.pem"), &leaf.key_pem).unwrap();
    let (ngx_http, ngx_https) = (free_port(), free_port());
    let example = include_str!("../../../deploy/reverse-proxy/nginx.conf")
        .replace("listen [::]:80;", "")
        .replace("listen [::]:443 ssl http2;", "")
        .replace("listen 80;", &format!("listen 127.0.0.1:{ngx_http};"))
        .replace("listen 443 ", &format!("listen 127.0.0.1:{ngx_https} "))
        .replace("127.0.0.1:5080", &format!("127.0.0.1:{}", p.http))
        .replace("127.0.0.1:5443", &format!("127.0.0.1:{}", p.https))
        .replace("chat.example.com", DOMAIN)
        .replace(
            "/etc/ssl/chat.example.test/",
            &format!("{}/", dir.display()),
        );
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
         events {{ worker_connections 64; }}\nhttp {{\naccess_log off;\n\
         client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         {example}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| panic!("nginx is not installed: apt-get install -y nginx-light"));
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    let check = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _nginx = Child::spawn("nginx", cmd);
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], ngx_https)),
        Duration::from_secs(20),
    );

    std::fs::write(p.challenges.join("via-nginx"), "via-nginx.key").unwrap();
    let c = p.client();
    let r = c
        .get(format!(
            "http://{DOMAIN}:{ngx_http}/.well-known/acme-challenge/via-nginx"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "via-nginx.key");
    let r = c
        .get(format!("http://{SHARE}:{ngx_http}/x?y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 301);
    assert_eq!(r.headers()["location"], format!("https://{SHARE}/x?y"));
    let body = c
        .get(format!("https://{DOMAIN}:{ngx_https}/login"))
        .header("x-forwarded-for", "203.0.113.50")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(field(&body, "backend"), "portal", "{body}");
    assert_eq!(field(&body, "host"), DOMAIN);
    assert_eq!(field(&body, "xfp"), "https");
    assert_eq!(field(&body, "xff"), "203.0.113.50, 127.0.0.1, 127.0.0.1");
    let r = c
        .get(format!("https://{GROUPS}:{ngx_https}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 301);
    assert_eq!(r.headers()["location"], format!("https://{DOMAIN}/"));
}

/// Both address families (spec 1.6: `0.0.0.0` and `[::]`), here on their loopback addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listens_on_ipv4_and_ipv6() {
    let portal = start_stub("portal").await;
    let server = start_stub("server").await;
    let p = start_proxy(
        portal,
        server,
        true,
        &[("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1 ::1")],
    );
    wait_for_port(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p.https)),
        Duration::from_secs(20),
    );
    let (code, _) = curl(
        &p,
        &[
            "-g",
            "-H",
            &format!("Host: {DOMAIN}"),
            &format!("http://[::1]:{}/", p.http),
        ],
    );
    assert_eq!(code, 301);
    let (code, body) = curl(
        &p,
        &[
            "--connect-to",
            &format!("{DOMAIN}:{}:[::1]:{}", p.https, p.https),
            &p.url(DOMAIN, "/login"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(field(&body, "xff"), "::1");
}

async fn http_status(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_signed_bootstrap_keeps_the_startup_page_until_the_real_certificate() {
    let (portal, server) = (start_stub("portal").await, start_stub("server").await);
    let p = start_proxy(portal, server, true, &[]);
    std::fs::write(p.live_dir().join("self-signed"), "bootstrap\n").unwrap();
    // The marker is noticed at the next certificate poll.
    let c = p.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_status(&c, &p.http_url(DOMAIN, "/")).await;
        if status == 200 {
            assert!(body.contains("Snikket is starting"), "{body}");
            break;
        }
        assert_eq!(status, 301);
        assert!(Instant::now() < deadline, "marker never noticed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // HTTPS still answers with the bootstrap certificate (XMPP clients and testers use it).
    let r = c.get(p.url(DOMAIN, "/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The CA-issued certificate replaces it: the marker goes, the files change.
    std::fs::remove_file(p.live_dir().join("self-signed")).unwrap();
    p.write_cert();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = http_status(&c, &p.http_url(DOMAIN, "/")).await;
        if status == 301 {
            break;
        }
        assert!(Instant::now() < deadline, "never left startup mode");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_signed_certificate_is_final_when_acme_is_off() {
    let (portal, server) = (start_stub("portal").await, start_stub("server").await);
    let p = start_proxy(portal, server, true, &[("SNIKKET_TWEAK_ACME", "0")]);
    std::fs::write(p.live_dir().join("self-signed"), "bootstrap\n").unwrap();
    // Give the poller time to see the marker; the redirect must stay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = http_status(&p.client(), &p.http_url(DOMAIN, "/")).await;
    assert_eq!(status, 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthcheck_command_answers_for_a_running_proxy_only() {
    let p = started(false).await;
    let healthcheck = |env: &[(String, String)]| {
        Command::new(env!("CARGO_BIN_EXE_snikket-web-proxy"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("healthcheck")
            .output()
            .unwrap()
    };
    let out = healthcheck(&p.env);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "healthy must be quiet: {out:?}");
    let Proxy {
        child, env, data, ..
    } = p;
    child.terminate();
    let out = healthcheck(&env);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("web proxy not answering"), "{text}");
    drop(data);
}
