//! Request handling: runs the route decision, serves local answers, forwards to backends with
//! streamed bodies and tunnels WebSocket upgrades (spec 6.1, 6.2).

use crate::access_log;
use crate::forwarded;
use crate::pages;
use crate::route::{self, Backend, Names, Route, Scheme, Upstream};
use crate::shared_js;
use crate::upstream::{Pool, PooledBody};
use crate::UpstreamError;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use snikket_config::Config;
use snikket_runtime::{CertResolver, TaskTracker};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Errors inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used in both directions.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// `Strict-Transport-Security` on every HTTPS response (spec 6.1).
pub const HSTS: &str = "max-age=63072000";
/// The `Server` header: no version (nginx `server_tokens off`).
pub const SERVER: &str = "Snikket";
/// Backend silence tolerated for ordinary requests (nginx `proxy_read_timeout` default).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Backend or client silence tolerated for BOSH and WebSocket (spec 6.2: 900 s).
pub const LONG_TIMEOUT: Duration = Duration::from_secs(900);
/// nginx's default `client_max_body_size`.
const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;

/// Shared, read-mostly state of the proxy.
pub struct State {
    names: Names,
    https_port: u16,
    trusted: Vec<IpNet>,
    challenge_dir: PathBuf,
    has_errors: PathBuf,
    shared_js_root: PathBuf,
    default_limit: u64,
    portal: Arc<Pool>,
    server: Arc<Pool>,
    /// Whether port 80 keeps serving once certificates exist (`SNIKKET_TWEAK_WEB_PROXY_PROTOS`).
    pub serve_http: bool,
    /// Whether ACME is on: then a self-signed bootstrap certificate is temporary and plain HTTP
    /// keeps the startup page instead of redirecting browsers to a certificate warning.
    acme: bool,
    /// The certificate, or none yet (startup mode).
    pub resolver: Arc<CertResolver>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Tracks connections and tunnels for draining.
    pub tracker: TaskTracker,
    epoch: Instant,
}

impl State {
    /// Builds the state from the configuration.
    pub fn new(
        config: &Config,
        resolver: Arc<CertResolver>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> State {
        State {
            names: Names {
                main: config.domain.ascii.to_lowercase(),
                main_unicode: config.domain.unicode.to_lowercase(),
                groups: config.groups_domain().to_lowercase(),
                share: config.share_domain().to_lowercase(),
            },
            https_port: config.proxy.https_port,
            trusted: config.proxy.trusted_proxies.clone(),
            challenge_dir: config.proxy.acme_challenge_dir.clone(),
            has_errors: config.has_errors_path(),
            shared_js_root: PathBuf::from(shared_js::ROOT),
            default_limit: DEFAULT_BODY_LIMIT
                .max(u64::from(config.portal.max_avatar_size) + DEFAULT_BODY_LIMIT),
            portal: Arc::new(Pool::new(authority(
                &config.proxy.portal_host,
                config.portal.port,
            ))),
            server: Arc::new(Pool::new(authority(
                &config.proxy.internal_http_host,
                config.server.internal_http_port,
            ))),
            serve_http: config.proxy.serve_http,
            acme: config.certs.acme,
            resolver,
            shutdown,
            tracker,
            epoch: Instant::now(),
        }
    }

    /// Normal mode: a certificate browsers can use is loaded. With ACME on, the self-signed
    /// bootstrap certificate does not count (spec 6.5: the startup page shows until the real
    /// certificate exists); with ACME off it is the certificate.
    pub fn ready(&self) -> bool {
        self.resolver.has_certificate() && !(self.acme && self.resolver.is_bootstrap())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Facts about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Which listener.
    pub scheme: Scheme,
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let body: Bytes = body.into();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The branded page for `status`.
pub fn error_page(status: StatusCode) -> Response<Body> {
    let mut r = respond(status, "text/html; charset=utf-8", pages::error(status));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(location: &str) -> Response<Body> {
    let mut r = respond(
        StatusCode::MOVED_PERMANENTLY,
        "text/html; charset=utf-8",
        "<!DOCTYPE html><title>301 Moved Permanently</title><p>Moved permanently.</p>\n",
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn header_str<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// All values of a header joined by `", "` (for `X-Forwarded-For`, which may repeat).
fn joined(h: &HeaderMap, name: &str) -> Option<String> {
    let parts: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Handles one request and writes its access-log line.
pub async fn handle(state: Arc<State>, conn: Conn, req: Request<Incoming>) -> Response<Body> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| header_str(req.headers(), &header::HOST).map(str::to_string));
    let xff = joined(req.headers(), "x-forwarded-for");
    let client = forwarded::client_ip(conn.peer.ip(), xff.as_deref(), &state.trusted);
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());
    let version = req.version();
    let referer = header_str(req.headers(), &header::REFERER).map(str::to_string);
    let user_agent = header_str(req.headers(), &header::USER_AGENT).map(str::to_string);
    let decision = route::route(
        &state.names,
        route::Request {
            scheme: conn.scheme,
            // HTTPS answers with whatever certificate is loaded; plain HTTP redirects there only
            // once the certificate is a real one.
            has_cert: match conn.scheme {
                Scheme::Http => state.ready(),
                Scheme::Https => state.resolver.has_certificate(),
            },
            host: host.as_deref(),
            path: req.uri().path(),
            query: req.uri().query(),
            default_limit: state.default_limit,
            https_port: state.https_port,
        },
    );
    let mut resp = match decision {
        Route::Upstream(u) => {
            let host = host.clone().unwrap_or_default();
            match forward(&state, conn, req, &host, xff.as_deref(), &u).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, backend = ?u.backend, path = %u.path_and_query, "upstream request failed");
                    error_page(e.status())
                }
            }
        }
        other => local(&state, other, &method).await,
    };
    finish_headers(&mut resp, conn.scheme);
    let normalized_host = host.as_deref().and_then(route::normalize_host);
    access_log::log(&access_log::Entry {
        client,
        method: method.as_str(),
        target: &target,
        version,
        status: resp.status().as_u16(),
        bytes: hyper::body::Body::size_hint(resp.body()).exact(),
        referer: referer.as_deref(),
        user_agent: user_agent.as_deref(),
        host: normalized_host.as_deref(),
    });
    resp
}

/// `Server` everywhere, HSTS on HTTPS.
fn finish_headers(resp: &mut Response<Body>, scheme: Scheme) {
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static(SERVER));
    if scheme == Scheme::Https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
}

/// Answers that need no backend.
async fn local(state: &State, route: Route, method: &Method) -> Response<Body> {
    let mut resp = match route {
        Route::Challenge(token) => match crate::challenge::read(&state.challenge_dir, &token).await
        {
            Some(bytes) => respond(StatusCode::OK, "text/plain", bytes),
            None => error_page(StatusCode::NOT_FOUND),
        },
        Route::Starting => {
            let has_errors = tokio::fs::try_exists(&state.has_errors)
                .await
                .unwrap_or(false);
            let mut r = respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                pages::starting(has_errors),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Route::Asset(a) => {
            let mut r = respond(StatusCode::OK, a.content_type, Bytes::from_static(a.body));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            r
        }
        Route::NotFound => error_page(StatusCode::NOT_FOUND),
        Route::SiteNotFound => {
            let mut r = respond(
                StatusCode::NOT_FOUND,
                "text/html; charset=utf-8",
                pages::site_not_found(),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Route::BadRequest => error_page(StatusCode::BAD_REQUEST),
        Route::Redirect(location) => redirect(&location),
        Route::SharedJs(rel) => match shared_js::lookup(&state.shared_js_root, &rel).await {
            shared_js::Lookup::File(bytes, ct) => {
                let mut r = respond(StatusCode::OK, ct, bytes);
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                );
                r
            }
            shared_js::Lookup::Forbidden => error_page(StatusCode::FORBIDDEN),
            shared_js::Lookup::NotFound => error_page(StatusCode::NOT_FOUND),
        },
        Route::Upstream(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if method == Method::HEAD {
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, full(Bytes::new()));
    }
    resp
}

/// Headers that describe one hop only (RFC 9110 §7.6.1) and never pass a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

fn wants_websocket(h: &HeaderMap) -> bool {
    let upgrade = header_str(h, &header::UPGRADE).is_some_and(|u| {
        u.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
    });
    let connection = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, &header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

fn classify(e: hyper::Error) -> UpstreamError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::TooLarge;
        }
        src = s.source();
    }
    UpstreamError::Protocol(format!("{e:?}"))
}

/// Forwards a request to its backend (spec 6.2 upstreams): original `Host`, `X-Forwarded-For`,
/// `X-Forwarded-Proto: https`, body streamed under the route's limit, response streamed back.
async fn forward(
    state: &Arc<State>,
    conn: Conn,
    mut req: Request<Incoming>,
    host: &str,
    xff: Option<&str>,
    u: &Upstream,
) -> Result<Response<Body>, UpstreamError> {
    if state.shutdown.is_cancelled() {
        return Err(UpstreamError::ShuttingDown);
    }
    if content_length(req.headers()).is_some_and(|len| len > u.body_limit) {
        return Err(UpstreamError::TooLarge);
    }
    let upgrade =
        u.websocket && req.version() == Version::HTTP_11 && wants_websocket(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let pool = match u.backend {
        Backend::Portal => &state.portal,
        Backend::Server => &state.server,
    };
    // Origin form: the connection already goes to the backend.
    let uri = Uri::try_from(u.path_and_query.as_str())
        .map_err(|e| UpstreamError::Protocol(format!("bad upstream uri: {e}")))?;
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    // HTTP/2 may split cookies over several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if cookies.len() > 1 {
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, v);
    }
    let xff_out = forwarded::forwarded_for(conn.peer.ip(), xff, &state.trusted);
    if let Ok(v) = HeaderValue::from_str(&xff_out) {
        headers.insert("x-forwarded-for", v);
    }
    let proto = match conn.scheme {
        Scheme::Https => "https",
        Scheme::Http => "http",
    };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(v) = upgrade_value {
            headers.insert(header::UPGRADE, v);
        }
    }

    let last = Arc::new(AtomicU64::new(state.now_ms()));
    let touch = {
        let last = last.clone();
        let st = state.clone();
        move |f| {
            last.store(st.now_ms(), Ordering::Relaxed);
            f
        }
    };
    let limit = usize::try_from(u.body_limit).unwrap_or(usize::MAX);
    let body: Body = Limited::new(body, limit).map_frame(touch).boxed_unsync();
    let mut out = Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;

    let idle = if u.long_poll {
        LONG_TIMEOUT
    } else {
        READ_TIMEOUT
    };
    let fut = async {
        // A connection for an upgrade is never reused: its future runs in a task of its own,
        // where hyper can hand the socket over to the tunnel.
        let reusable = if upgrade { None } else { pool.checkout().await };
        let (mut conn, reused) = match reusable {
            Some(c) => (c, true),
            None => (pool.connect().await?, false),
        };
        if upgrade {
            conn.spawn_with_upgrades();
        }
        match conn.send(out).await {
            Ok(resp) => Ok((resp, conn)),
            Err(mut e) => match e.take_message() {
                // The backend closed the idle connection before the request went out: once
                // more on a new connection, as an HTTP client does.
                Some(out) if reused => {
                    let mut conn = pool.connect().await?;
                    match conn.send(out).await {
                        Ok(resp) => Ok((resp, conn)),
                        Err(e) => Err(classify(e.into_error())),
                    }
                }
                _ => Err(classify(e.into_error())),
            },
        }
    };
    tokio::pin!(fut);
    let result = loop {
        let seen = last.load(Ordering::Relaxed);
        let deadline = state.epoch + Duration::from_millis(seen) + idle;
        tokio::select! {
            r = &mut fut => break r,
            _ = tokio::time::sleep_until(deadline.into()) => {
                if last.load(Ordering::Relaxed) == seen {
                    return Err(UpstreamError::Timeout);
                }
            }
        }
    };
    let (mut resp, conn) = result?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(UpstreamError::Protocol(
                "unexpected 101 from backend".into(),
            ));
        };
        let server_upgrade = hyper::upgrade::on(&mut resp);
        let shutdown = state.shutdown.clone();
        state.tracker.spawn(async move {
            match tokio::try_join!(client_upgrade, server_upgrade) {
                Ok((c, s)) => {
                    tunnel(TokioIo::new(c), TokioIo::new(s), LONG_TIMEOUT, shutdown).await
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, full(Bytes::new())));
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if u.cors
        && !parts
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        parts.headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    // Bodies on reusable connections drive the connection themselves (see `upstream`); after an
    // upgrade request the connection's own task does.
    let body = if upgrade {
        crate::idle_body::IdleBody::new(body, idle).boxed_unsync()
    } else {
        crate::idle_body::IdleBody::new(PooledBody::new(body, conn, pool.clone()), idle)
            .boxed_unsync()
    };
    Ok(Response::from_parts(parts, body))
}

/// Copies bytes both ways until either side closes, nothing moves for `idle`, or shutdown.
pub async fn tunnel<A, B>(a: A, b: B, idle: Duration, shutdown: CancellationToken)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    loop {
        let step = tokio::select! {
            n = ar.read(&mut abuf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => copy(&mut bw, &abuf[..n]).await,
            },
            n = br.read(&mut bbuf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => copy(&mut aw, &bbuf[..n]).await,
            },
            _ = tokio::time::sleep(idle) => {
                tracing::debug!("websocket idle timeout");
                break;
            }
            _ = shutdown.cancelled() => break,
        };
        if step.is_err() {
            break;
        }
    }
    let _ = aw.shutdown().await;
    let _ = bw.shutdown().await;
}

async fn copy<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn websocket_detection() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(!wants_websocket(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_websocket(&h));
    }

    #[test]
    fn authorities() {
        assert_eq!(authority("localhost", 5280), "localhost:5280");
        assert_eq!(authority("::1", 5280), "[::1]:5280");
    }
}
