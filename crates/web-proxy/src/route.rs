//! The routing table of spec 6.2, 6.3 and 6.5 as one pure function: (listener, mode, host, path) → [`Route`].
//!
//! Kept free of I/O so that every row of the table is a unit test.

use crate::pages::Asset;

/// Request body limit of uploads: 100 MiB plus 16 bytes (spec 6.2, `client_max_body_size 104857616`).
pub const UPLOAD_LIMIT: u64 = 104_857_616;

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (port 80).
    Http,
    /// HTTPS (port 443).
    Https,
}

/// The internal services behind the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The web portal.
    Portal,
    /// The XMPP server's internal HTTP (uploads, BOSH, WebSocket, host-meta, health).
    Server,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An HTTP-01 challenge file named `token`.
    Challenge(String),
    /// The "Snikket is starting" page (startup mode only).
    Starting,
    /// An asset embedded in the binary.
    Asset(&'static Asset),
    /// The branded "page not found" 404.
    NotFound,
    /// The branded "site not found" 404 for hosts that are not ours.
    SiteNotFound,
    /// `400`: no usable `Host`, or a path that climbs above the root.
    BadRequest,
    /// `301` to this location.
    Redirect(String),
    /// A file from the bundled JavaScript libraries (`/share/...`), relative path.
    SharedJs(String),
    /// Forward to a backend.
    Upstream(Upstream),
}

/// A forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Which backend.
    pub backend: Backend,
    /// Path and query sent to the backend.
    pub path_and_query: String,
    /// Request body limit.
    pub body_limit: u64,
    /// Whether a WebSocket upgrade may pass (and the 900 s idle timeout applies).
    pub websocket: bool,
    /// Whether the response needs `Access-Control-Allow-Origin` (host-meta, XEP-0156).
    pub cors: bool,
    /// Long-lived exchanges (BOSH, WebSocket) get 900 s instead of 60 s of backend silence.
    pub long_poll: bool,
}

/// The host names we serve, in ASCII (punycode) form.
#[derive(Debug, Clone)]
pub struct Names {
    /// `DOMAIN`.
    pub main: String,
    /// `DOMAIN` in Unicode form, accepted as an alias.
    pub main_unicode: String,
    /// `groups.DOMAIN`.
    pub groups: String,
    /// `share.DOMAIN`.
    pub share: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Main,
    Groups,
    Share,
    Unknown,
}

impl Names {
    fn site(&self, host: &str) -> Site {
        if host == self.main || host == self.main_unicode {
            Site::Main
        } else if host == self.groups {
            Site::Groups
        } else if host == self.share {
            Site::Share
        } else {
            Site::Unknown
        }
    }
}

/// Everything the routing decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The listener.
    pub scheme: Scheme,
    /// Whether a certificate exists (normal mode) or not (startup mode).
    pub has_cert: bool,
    /// The `Host` header or `:authority`, as sent.
    pub host: Option<&'a str>,
    /// The raw request path.
    pub path: &'a str,
    /// The raw query, if any.
    pub query: Option<&'a str>,
    /// Default body limit for everything that is not an upload.
    pub default_limit: u64,
    /// The HTTPS port, for redirects from port 80.
    pub https_port: u16,
}

/// Paths of portal endpoints that are internal only (spec 6.2, checklist 98); answered with 404 here
/// instead of trusting the portal to refuse them.
const INTERNAL_ONLY: &[&str] = &["/oauth2", "/rest", "/register_api", "/xep227", "/metrics"];

/// Paths on the main host that go to the XMPP server as they are (spec 6.2, checklist 97).
const SERVER_PREFIXES: &[&str] = &["/admin_api", "/invites_api", "/invites_bootstrap"];

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Decides what to do with a request.
pub fn route(names: &Names, req: Request<'_>) -> Route {
    let Some(host) = req.host.and_then(normalize_host) else {
        return Route::BadRequest;
    };
    let Some(path) = normalize_path(req.path) else {
        return Route::BadRequest;
    };
    let site = names.site(&host);
    if site == Site::Unknown {
        // Appendix A3 fixed: unknown names get the 404 page on every listener.
        return Route::SiteNotFound;
    }
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        return if crate::challenge::valid_token(token) {
            Route::Challenge(token.to_string())
        } else {
            Route::NotFound
        };
    }
    match (req.scheme, req.has_cert) {
        (Scheme::Http, false) => startup(&path),
        (Scheme::Http, true) => {
            let port = if req.https_port == 443 {
                String::new()
            } else {
                format!(":{}", req.https_port)
            };
            let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
            Route::Redirect(format!("https://{host}{port}{}{query}", req.path))
        }
        // Without a certificate no TLS handshake completes; should one slip through, say so.
        (Scheme::Https, false) => Route::NotFound,
        (Scheme::Https, true) => match site {
            Site::Main => main_site(&path, req.query, req.default_limit),
            Site::Share => {
                if path.starts_with("/upload/") {
                    Route::Upstream(Upstream {
                        backend: Backend::Server,
                        path_and_query: with_query(&path, req.query),
                        body_limit: UPLOAD_LIMIT,
                        websocket: false,
                        cors: false,
                        long_poll: false,
                    })
                } else {
                    Route::Redirect(format!("https://{}/", names.main))
                }
            }
            Site::Groups => Route::Redirect(format!("https://{}/", names.main)),
            Site::Unknown => Route::SiteNotFound,
        },
    }
}

fn startup(path: &str) -> Route {
    match path {
        "/" | "/index.html" => Route::Starting,
        p => match crate::pages::asset(p) {
            Some(a) => Route::Asset(a),
            None => Route::NotFound,
        },
    }
}

fn main_site(path: &str, query: Option<&str>, default_limit: u64) -> Route {
    let upstream = |backend, pq: String| Upstream {
        backend,
        path_and_query: pq,
        body_limit: default_limit,
        websocket: false,
        cors: false,
        long_poll: false,
    };
    if INTERNAL_ONLY.iter().any(|p| under(path, p)) {
        return Route::NotFound;
    }
    if path == "/.well-known/host-meta" || path == "/.well-known/host-meta.json" {
        return Route::Upstream(Upstream {
            cors: true,
            ..upstream(Backend::Server, with_query(path, query))
        });
    }
    if SERVER_PREFIXES.iter().any(|p| under(path, p)) {
        return Route::Upstream(upstream(Backend::Server, with_query(path, query)));
    }
    if under(path, "/upload") {
        return Route::Upstream(Upstream {
            body_limit: UPLOAD_LIMIT,
            ..upstream(Backend::Server, with_query(path, query))
        });
    }
    if under(path, "/http-bind") || under(path, "/xmpp-websocket") {
        return Route::Upstream(Upstream {
            websocket: under(path, "/xmpp-websocket"),
            long_poll: true,
            ..upstream(Backend::Server, with_query(path, query))
        });
    }
    if let Some(rest) = path.strip_prefix("/_health/portal") {
        if rest.is_empty() || rest.starts_with('/') {
            return Route::Upstream(upstream(
                Backend::Portal,
                with_query(&format!("/_health{rest}"), query),
            ));
        }
    }
    if let Some(rest) = path.strip_prefix("/_health/xmpp") {
        if rest.is_empty() || rest.starts_with('/') {
            return Route::Upstream(upstream(
                Backend::Server,
                with_query(&format!("/host_status_check{rest}"), query),
            ));
        }
    }
    if let Some(rest) = path.strip_prefix("/share/") {
        return Route::SharedJs(rest.to_string());
    }
    if path == "/share" {
        return Route::SharedJs(String::new());
    }
    if let Some(a) = crate::pages::asset(path) {
        return Route::Asset(a);
    }
    Route::Upstream(upstream(Backend::Portal, with_query(path, query)))
}

/// `path` is `prefix` or below it (segment-wise, so `/rest` does not catch `/restaurant`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// Lower-cases the host and drops the port and a trailing dot. `None` if empty or malformed.
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // An IPv6 literal; never one of our names but still a well-formed host.
        let end = raw.find(']')?;
        &raw[..=end]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_control() || b == b'/' || b == b'@' || b == b' ')
    {
        return None;
    }
    Some(host.to_lowercase())
}

/// RFC 3986 normalization for routing: decodes percent-encoded unreserved characters, upper-cases
/// the remaining escapes, merges slashes and removes dot segments. `None` for paths that do not
/// start with `/`, carry invalid escapes, or climb above the root.
pub fn normalize_path(raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        return None;
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(v));
            } else {
                decoded.push('%');
                decoded.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else if b == b'\\' || b.is_ascii_control() {
            return None;
        } else {
            // Multi-byte UTF-8 is copied byte-wise through the char boundary below.
            let ch = raw[i..].chars().next()?;
            decoded.push(ch);
            i += ch.len_utf8();
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if trailing || out.is_empty() {
        path.push('/');
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            main: "chat.example.com".into(),
            main_unicode: "chat.example.com".into(),
            groups: "groups.chat.example.com".into(),
            share: "share.chat.example.com".into(),
        }
    }

    fn https(host: &str, path: &str) -> Route {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        route(
            &names(),
            Request {
                scheme: Scheme::Https,
                has_cert: true,
                host: Some(host),
                path,
                query,
                default_limit: 1 << 20,
                https_port: 443,
            },
        )
    }

    fn backend(r: &Route) -> Option<(Backend, &str)> {
        match r {
            Route::Upstream(u) => Some((u.backend, u.path_and_query.as_str())),
            _ => None,
        }
    }

    #[test]
    fn https_main_host_table() {
        use Backend::{Portal, Server};
        let h = "chat.example.com";
        let cases: &[(&str, Option<(Backend, &str)>)] = &[
            ("/", Some((Portal, "/"))),
            ("/login", Some((Portal, "/login"))),
            ("/admin/users?x=1", Some((Portal, "/admin/users?x=1"))),
            ("/invite/abc/", Some((Portal, "/invite/abc/"))),
            (
                "/.well-known/security.txt",
                Some((Portal, "/.well-known/security.txt")),
            ),
            (
                "/static/css/portal.css",
                Some((Portal, "/static/css/portal.css")),
            ),
            ("/index.html", Some((Portal, "/index.html"))),
            ("/_errors/502.html", Some((Portal, "/_errors/502.html"))),
            ("/admin_api/users", Some((Server, "/admin_api/users"))),
            ("/invites_api", Some((Server, "/invites_api"))),
            (
                "/invites_bootstrap?token=x",
                Some((Server, "/invites_bootstrap?token=x")),
            ),
            (
                "/upload/slot/file.jpg",
                Some((Server, "/upload/slot/file.jpg")),
            ),
            ("/http-bind", Some((Server, "/http-bind"))),
            ("/xmpp-websocket", Some((Server, "/xmpp-websocket"))),
            (
                "/.well-known/host-meta",
                Some((Server, "/.well-known/host-meta")),
            ),
            (
                "/.well-known/host-meta.json",
                Some((Server, "/.well-known/host-meta.json")),
            ),
            ("/_health/portal", Some((Portal, "/_health"))),
            ("/_health/xmpp", Some((Server, "/host_status_check"))),
            ("/restaurant", Some((Portal, "/restaurant"))),
        ];
        for (path, want) in cases {
            assert_eq!(backend(&https(h, path)), *want, "{path}");
        }
        for blocked in [
            "/oauth2/token",
            "/rest",
            "/register_api/x",
            "/xep227/export",
            "/metrics",
            "/%6fauth2/x",
            "/a/../rest/",
        ] {
            assert_eq!(https(h, blocked), Route::NotFound, "{blocked}");
        }
        assert_eq!(
            https(h, "/share/jquery/jquery.min.js"),
            Route::SharedJs("jquery/jquery.min.js".into())
        );
        assert!(matches!(
            https(h, "/static/proxy/snikket.css"),
            Route::Asset(_)
        ));
        match https(h, "/upload/x") {
            Route::Upstream(u) => assert_eq!(u.body_limit, UPLOAD_LIMIT),
            r => panic!("{r:?}"),
        }
        match https(h, "/xmpp-websocket") {
            Route::Upstream(u) => assert!(u.websocket && u.long_poll),
            r => panic!("{r:?}"),
        }
        match https(h, "/.well-known/host-meta") {
            Route::Upstream(u) => assert!(u.cors && !u.websocket),
            r => panic!("{r:?}"),
        }
        match https(h, "/login") {
            Route::Upstream(u) => assert!(!u.cors && !u.websocket && u.body_limit == 1 << 20),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn https_other_hosts() {
        let to_main = Route::Redirect("https://chat.example.com/".into());
        assert_eq!(https("groups.chat.example.com", "/anything"), to_main);
        assert_eq!(https("share.chat.example.com", "/"), to_main);
        assert_eq!(https("share.chat.example.com", "/login"), to_main);
        assert_eq!(
            backend(&https("share.chat.example.com", "/upload/a/b.png")),
            Some((Backend::Server, "/upload/a/b.png"))
        );
        assert_eq!(https("other.example.net", "/"), Route::SiteNotFound);
        assert_eq!(
            https("CHAT.Example.com.:443", "/x").clone(),
            https("chat.example.com", "/x")
        );
    }

    #[test]
    fn http_redirects_and_challenges() {
        let r = |has_cert, host: &str, path: &str, query, port| {
            route(
                &names(),
                Request {
                    scheme: Scheme::Http,
                    has_cert,
                    host: Some(host),
                    path,
                    query,
                    default_limit: 1 << 20,
                    https_port: port,
                },
            )
        };
        assert_eq!(
            r(true, "chat.example.com", "/a/b", Some("c=d"), 443),
            Route::Redirect("https://chat.example.com/a/b?c=d".into())
        );
        assert_eq!(
            r(true, "groups.chat.example.com:8080", "/", None, 5443),
            Route::Redirect("https://groups.chat.example.com:5443/".into())
        );
        assert_eq!(
            r(
                true,
                "chat.example.com",
                "/.well-known/acme-challenge/abc-_Z9",
                None,
                443
            ),
            Route::Challenge("abc-_Z9".into())
        );
        assert_eq!(
            r(
                false,
                "share.chat.example.com",
                "/.well-known/acme-challenge/tok",
                None,
                443
            ),
            Route::Challenge("tok".into())
        );
        for bad in [
            "/.well-known/acme-challenge/../../etc/passwd",
            "/.well-known/acme-challenge/..%2f..%2fetc%2fpasswd",
            "/.well-known/acme-challenge/a.b",
            "/.well-known/acme-challenge/",
            "/.well-known/acme-challenge/%2e%2e",
        ] {
            let got = r(true, "chat.example.com", bad, None, 443);
            assert!(
                matches!(
                    got,
                    Route::NotFound | Route::BadRequest | Route::Redirect(_)
                ),
                "{bad}: {got:?}"
            );
            assert!(!matches!(got, Route::Challenge(_)), "{bad}");
        }
        assert_eq!(
            r(true, "evil.example.net", "/", None, 443),
            Route::SiteNotFound
        );
        assert_eq!(
            r(false, "evil.example.net", "/", None, 443),
            Route::SiteNotFound
        );
        assert_eq!(
            r(false, "chat.example.com", "/", None, 443),
            Route::Starting
        );
        assert_eq!(
            r(false, "chat.example.com", "/index.html", None, 443),
            Route::Starting
        );
        assert_eq!(
            r(false, "chat.example.com", "/login", None, 443),
            Route::NotFound
        );
        assert!(matches!(
            r(
                false,
                "chat.example.com",
                "/static/proxy/snikket.css",
                None,
                443
            ),
            Route::Asset(_)
        ));
        let no_host = route(
            &names(),
            Request {
                scheme: Scheme::Http,
                has_cert: true,
                host: None,
                path: "/",
                query: None,
                default_limit: 1,
                https_port: 443,
            },
        );
        assert_eq!(no_host, Route::BadRequest);
    }

    #[test]
    fn path_normalization() {
        let cases = [
            ("/", Some("/")),
            ("/a//b/", Some("/a/b/")),
            ("/a/./b", Some("/a/b")),
            ("/a/../b", Some("/b")),
            ("/a/..", Some("/")),
            ("/%61%2Fb", Some("/a%2Fb")),
            ("/%2e%2e/x", None),
            ("/../x", None),
            ("x", None),
            ("/%zz", None),
            ("/%4", None),
            ("/a\\b", None),
            ("/caf\u{e9}", Some("/caf\u{e9}")),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn host_normalization() {
        assert_eq!(
            normalize_host("Chat.Example.COM:8443").as_deref(),
            Some("chat.example.com")
        );
        assert_eq!(normalize_host("[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a:b"), None);
        assert_eq!(normalize_host(""), None);
        assert_eq!(normalize_host("a/b"), None);
    }
}
