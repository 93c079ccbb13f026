//! The Snikket web portal: invite pages, user pages and the admin panel, server-rendered.
//!
//! It holds no data of its own: every page is built from calls to the server's admin gRPC API
//! ([`backend`]). Sessions live in signed cookies ([`session`]).
#![warn(missing_docs)]

mod admin;
pub mod backend;
mod handlers;
mod i18n;
mod plural;
mod public;
pub mod session;
mod throttle;
mod web;

use anyhow::Context;
use snikket_config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use backend::Backend;

/// What the portal needs besides its listener; build it with [`Settings::from_config`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Display name of the service.
    pub site_name: String,
    /// `SNIKKET_DOMAIN` (Unicode form, for display and `user@DOMAIN` logins).
    pub domain: String,
    /// Key signing the cookies.
    pub cookie_key: Vec<u8>,
    /// iOS App Store link; `None` shows "coming soon".
    pub apple_store_url: Option<String>,
    /// `SNIKKET_TOS_URI`: `/terms` redirects there (404 when unset).
    pub tos_uri: Option<String>,
    /// `SNIKKET_PRIVACY_URI`: `/privacy` redirects there (404 when unset).
    pub privacy_uri: Option<String>,
    /// `SNIKKET_ABUSE_EMAIL`, named on `/policies/`.
    pub abuse_email: Option<String>,
    /// `SNIKKET_SECURITY_EMAIL`, the first contact of `/.well-known/security.txt`.
    pub security_email: Option<String>,
    /// `SNIKKET_WEB_SHOW_METRICS`: host, portal and server figures on the system page.
    pub show_metrics: bool,
    /// `SNIKKET_WEB_LANGUAGES`: the page languages, the first is the fallback.
    pub languages: Vec<String>,
    /// `SNIKKET_WEB_MAX_AVATAR_SIZE`: largest avatar upload on the profile page, in bytes.
    pub max_avatar_size: usize,
    /// `SNIKKET_WEB_AVATAR_CACHE_TTL`: how long browsers may keep an avatar, in seconds.
    pub avatar_cache_ttl: u32,
}

impl Settings {
    /// Reads the site name and domain, and the cookie key from `SNIKKET_TWEAK_PORTAL_SECRET_KEY`
    /// or from `DATA/portal/secret_key` (created once, so an upgrade logs nobody out).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let cookie_key = match &config.portal.secret_key {
            Some(k) => k.as_bytes().to_vec(),
            None => {
                let dir = config.data_dir.join("portal");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let key = snikket_runtime::load_or_create_secret(&dir.join("secret_key"), 0o600)?;
                // Snikket's PUID/PGID: the portal's files belong to them (only when run as root).
                let failed = snikket_runtime::files::chown_tree(&dir, config.puid.zip(config.pgid));
                if failed > 0 {
                    tracing::warn!(dir = %dir.display(), failed, "could not give the portal's files to PUID/PGID");
                }
                key.expose().as_bytes().to_vec()
            }
        };
        Ok(Settings {
            site_name: config.site_name.clone(),
            domain: config.domain.unicode.clone(),
            cookie_key,
            apple_store_url: config.portal.apple_store_url.clone(),
            tos_uri: non_empty(&config.portal.tos_uri),
            privacy_uri: non_empty(&config.portal.privacy_uri),
            abuse_email: non_empty(&config.portal.abuse_email),
            security_email: non_empty(&config.portal.security_email),
            show_metrics: config.portal.show_metrics,
            languages: config.portal.languages.clone(),
            max_avatar_size: usize::try_from(config.portal.max_avatar_size).unwrap_or(usize::MAX),
            avatar_cache_ttl: config.portal.avatar_cache_ttl,
        })
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    signer: session::Signer,
    backend: Backend,
    templates: minijinja::Environment<'static>,
    i18n: Arc<i18n::I18n>,
    throttle: throttle::Throttle,
    /// Process start, Unix seconds (for the average CPU use on the system page).
    started_at: i64,
}

impl AppState {
    /// State for `settings`, calling the server through `backend`.
    pub fn new(settings: Settings, backend: Backend) -> Self {
        let i18n = i18n::I18n::new(&settings.languages);
        AppState {
            inner: Arc::new(Inner {
                signer: session::Signer::new(&settings.cookie_key),
                settings,
                backend,
                templates: web::templates(&i18n),
                i18n,
                throttle: throttle::Throttle::new(5, std::time::Duration::from_secs(300)),
                started_at: web::now(),
            }),
        }
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> axum::Router {
    handlers::router(state)
}

/// Serves the portal on `config.portal.interface:port` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = Settings::from_config(&config)?;
    let secret = snikket_runtime::load_or_create_secret(&config.grpc_secret_path(), 0o600)
        .context("reading the internal gRPC secret")?;
    let local = |port: u16| match config.grpc_interface {
        std::net::IpAddr::V4(ip) => format!("http://{ip}:{port}"),
        std::net::IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
    };
    let backend = Backend::new(&local(config.server.grpc_port), secret.expose())?.with_status(
        &local(config.certs.grpc_port),
        &local(config.turn.grpc_port),
    )?;
    let addr = SocketAddr::new(config.portal.interface, config.portal.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the portal to {addr}"))?;
    serve(listener, AppState::new(settings, backend), shutdown).await
}

/// Serves the portal on an already bound listener (tests bind 127.0.0.1:0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "portal listening");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving the portal")?;
    Ok(())
}

/// The `healthcheck` command: `/_health` must answer `STATUS OK` (it needs no backend call, so
/// a stopped XMPP server does not make the portal itself unhealthy).
pub async fn healthcheck(config: &snikket_config::Config) -> Result<(), String> {
    use snikket_runtime::health::{http_get, probe_addr};
    let addr = probe_addr(&[config.portal.interface], config.portal.port);
    let answer = http_get(addr, "/_health")
        .await
        .map_err(|e| format!("portal {e}"))?;
    if answer.status == 200 && answer.body.starts_with("STATUS OK") {
        Ok(())
    } else {
        Err(format!("portal answered {} on {addr}", answer.status))
    }
}

#[cfg(test)]
mod tests {
    /// Invariant: the portal talks to the server only over gRPC.
    #[test]
    fn never_depends_on_the_store_or_the_xmpp_crate() {
        let manifest = include_str!("../Cargo.toml");
        for forbidden in ["snikket-store", "snikket-xmpp", "snikket-server"] {
            assert!(
                !manifest.contains(forbidden),
                "crates/portal depends on {forbidden}"
            );
        }
    }
}
