//! The internal HTTP service (loopback by default): health and file sharing (`upload::http`).

use crate::upload::http as upload;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use snikket_config::Config;
use snikket_runtime::CancellationToken;
use snikket_store::Store;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Shared handles for HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The database.
    pub store: Store,
    /// File sharing (XEP-0363).
    pub uploads: std::sync::Arc<crate::upload::Uploads>,
}

/// Binds every configured internal interface.
pub async fn bind(config: &Config) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for ip in &config.server.internal_http_interfaces {
        let addr = SocketAddr::new(*ip, config.server.internal_http_port);
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, "internal http listening");
                out.push(l);
            }
            // IPv6 may be unavailable in a container; one working interface is enough.
            Err(e) if ip.is_ipv6() => {
                tracing::warn!(%addr, error = %e, "cannot listen on IPv6 address")
            }
            Err(e) => return Err(anyhow::anyhow!("binding internal http on {addr}: {e}")),
        }
    }
    if out.is_empty() {
        anyhow::bail!("no internal http interface could be bound");
    }
    Ok(out)
}

/// The routes of the internal HTTP service.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/host_status_check", get(host_status))
        .route("/upload", get(upload::info))
        .route("/upload/", get(upload::info))
        .route(
            "/upload/{slot}/{*name}",
            get(upload::get).put(upload::put).options(upload::preflight),
        )
        .with_state(state)
}

/// Serves one listener until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// `STATUS OK` when the server can reach its database (mod_http_host_status_check's format).
async fn host_status(State(state): State<HttpState>) -> (StatusCode, String) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "STATUS OK\n".to_string()),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "STATUS FAIL: database\n".to_string(),
            )
        }
    }
}
