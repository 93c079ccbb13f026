//! Snikket's web proxy (spec section 6): TLS termination on the HTTP and HTTPS ports, ACME
//! challenges, the startup page, and routing to the portal and the server's internal HTTP.
//!
//! Flow: `listener` accepts (connection limit, TLS handshake with a deadline, HTTP/1.1 or HTTP/2
//! by ALPN) → `proxy::handle` asks the pure `route::route` what to do → a page, a challenge file,
//! a redirect, or `proxy::forward` to a backend (streamed bodies, WebSocket tunnels).

pub mod access_log;
pub mod challenge;
pub mod error;
pub mod forwarded;
pub mod idle_body;
pub mod linger;
pub mod listener;
pub mod pages;
pub mod proxy;
pub mod route;
pub mod shared_js;
pub mod tls;
pub mod upstream;

pub use error::{ProxyError, UpstreamError};

use anyhow::Context;
use snikket_config::Config;
use snikket_runtime::{CertResolver, CertSource, TaskTracker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the live directory is checked for a new certificate (spec: within 10 s).
pub const CERT_POLL: Duration = Duration::from_secs(2);
/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the proxy until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let resolver = CertResolver::new(CertSource::live_dir(&config.cert_live_dir()));
    let watcher = resolver.watch(CERT_POLL, shutdown.clone());
    let tracker = TaskTracker::new();
    let state = Arc::new(proxy::State::new(
        &config,
        resolver.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    let tls = tls::server_config(&config.proxy, resolver.clone())
        .context("building the TLS configuration")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(listener::MAX_CONNECTIONS));
    let start_http = config.proxy.serve_http || !state.ready();
    tracing::info!(
        domain = %config.domain.ascii,
        certificate = resolver.has_certificate(),
        bootstrap = resolver.is_bootstrap(),
        mode = if state.ready() { "normal" } else { "startup" },
        "web proxy starting"
    );
    let mut bound = 0usize;
    for ip in &config.bind_interfaces {
        if start_http {
            let addr = SocketAddr::new(*ip, config.proxy.http_port);
            let l =
                listener::bind(addr).with_context(|| format!("binding http listener on {addr}"))?;
            tracing::info!(%addr, "listening (http)");
            tracker.spawn(listener::serve(l, None, state.clone(), limit.clone()));
            bound += 1;
        }
        if config.proxy.serve_https {
            let addr = SocketAddr::new(*ip, config.proxy.https_port);
            let l = listener::bind(addr)
                .with_context(|| format!("binding https listener on {addr}"))?;
            tracing::info!(%addr, "listening (https)");
            tracker.spawn(listener::serve(
                l,
                Some(tokio_rustls::TlsAcceptor::from(tls.clone())),
                state.clone(),
                limit.clone(),
            ));
            bound += 1;
        }
    }
    if bound == 0 {
        anyhow::bail!("no listener configured (SNIKKET_TWEAK_BIND_INTERFACES / SNIKKET_TWEAK_WEB_PROXY_PROTOS)");
    }
    shutdown.cancelled().await;
    tracing::info!("web proxy shutting down");
    snikket_runtime::shutdown::drain(&tracker, DRAIN).await;
    let _ = watcher.await;
    Ok(())
}

/// The `healthcheck` command: with port 80 in use, `GET /` there must answer (the startup page
/// or the redirect to HTTPS; a 5xx is unhealthy); otherwise the HTTPS port must accept.
pub async fn healthcheck(config: &Config) -> Result<(), String> {
    use snikket_runtime::health::{http_get, probe_addr, tcp_connect};
    let ifaces = &config.bind_interfaces;
    if config.proxy.serve_http {
        let addr = probe_addr(ifaces, config.proxy.http_port);
        let answer = http_get(addr, "/")
            .await
            .map_err(|e| format!("web proxy {e}"))?;
        if answer.status >= 500 {
            return Err(format!("web proxy answered {} on {addr}", answer.status));
        }
        Ok(())
    } else {
        tcp_connect(probe_addr(ifaces, config.proxy.https_port))
            .await
            .map_err(|e| format!("web proxy {e}"))
    }
}
