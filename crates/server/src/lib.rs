//! The Snikket XMPP server as a library: `run(config, shutdown)` plus the command-line actions.
//!
//! `main.rs` only parses arguments and calls into here, so tests can run the server in-process.

pub mod activity;
pub mod archive;
pub mod blocking;
pub mod bookmarks;
pub mod c2s;
pub mod cli;
pub mod clients;
pub mod error;
pub mod extdisco;
pub mod grpc;
pub mod http;
pub mod inbox;
pub mod init;
pub mod modules;
pub mod muc;
pub mod onboarding;
pub mod ops;
pub mod pep;
pub mod private;
pub mod push;
pub mod retention;
pub mod router;
pub mod routing;
pub mod s2s;
pub mod state;
pub mod upload;
pub mod vcard;
pub mod xep227;
pub mod xml;

use anyhow::Context;
use snikket_config::Config;
use snikket_runtime::{CancellationToken, TaskTracker};
use std::time::Duration;

/// Runs the server until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data = init::prepare(&config)
        .await
        .context("preparing the data directory")?;
    tracing::info!(
        domain = %config.domain.unicode,
        backend = ?data.store.backend(),
        version = env!("CARGO_PKG_VERSION"),
        "server starting"
    );
    let tracker = TaskTracker::new();
    let uploads = std::sync::Arc::new(
        upload::Uploads::open(&config).context("creating the upload directory")?,
    );
    let listeners = http::bind(&config).await?;
    for listener in listeners {
        let state = http::HttpState {
            store: data.store.clone(),
            uploads: uploads.clone(),
        };
        let token = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = http::serve(listener, state, token).await {
                tracing::error!(error = %e, "internal http listener failed");
            }
        });
    }
    let grpc_listener = grpc::bind(&config)
        .await
        .context("binding the admin gRPC api")?;
    let api = grpc::AdminApi::new(config.clone(), data.store.clone());
    {
        let api = api.clone();
        let secret = data.grpc_secret.expose().clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = grpc::serve(grpc_listener, api, &secret, token).await {
                tracing::error!(error = %e, "admin gRPC api failed");
            }
        });
    }
    let resolver = snikket_runtime::CertResolver::new(snikket_runtime::CertSource::live_dir(
        &config.cert_live_dir(),
    ));
    if !resolver.has_certificate() {
        tracing::warn!(dir = %config.cert_live_dir().display(), "waiting for certificates; clients are refused until they appear");
    }
    resolver.watch(Duration::from_secs(5), shutdown.clone());
    let tls = snikket_runtime::tls::server_config(
        config.server.tls_profile,
        resolver.clone(),
        &[b"xmpp-client"],
    )
    .context("building the TLS configuration")?;
    let tls = c2s::tls::config(tls);
    let (caps, caps_node) = modules::server_caps(&config).unzip();
    let s2s = s2s::S2s::new(&config, resolver.clone(), tracker.clone(), shutdown.clone())
        .context("setting up federation")?;
    let state = std::sync::Arc::new(state::State {
        caps,
        caps_node,
        blocklists: Default::default(),
        muc: Default::default(),
        store: data.store.clone(),
        uploads: uploads.clone(),
        router: router::Router::default(),
        tls,
        resolver,
        ip_limiter: Default::default(),
        auth_throttle: Default::default(),
        turn_secret: Some(match &config.turn.secret {
            Some(s) => snikket_runtime::Secret::new(s.clone()),
            None => data.turn_secret.clone(),
        }),
        fast_key: data.fast_key.clone(),
        sm: Default::default(),
        pep: Default::default(),
        push: Default::default(),
        archiver: archive::Archiver::spawn(data.store.clone(), &tracker, shutdown.clone()),
        activity: Default::default(),
        trimmer: Default::default(),
        started: std::time::Instant::now(),
        s2s,
        config,
    });
    state.s2s.attach(&state);
    api.attach(state.clone());
    retention::spawn(
        data.store.clone(),
        uploads,
        state.config.server.retention_days,
        &tracker,
        shutdown.clone(),
    );
    spawn_checkpoints(data.store.clone(), &tracker, shutdown.clone());
    activity::Activity::spawn(state.clone(), &tracker, shutdown.clone());
    {
        let trimmer = state.trimmer.clone();
        let token = shutdown.clone();
        tracker.spawn(async move { trimmer.run(token).await });
    }
    c2s::start(state.clone(), &tracker, shutdown.clone()).await?;
    s2s::incoming::start(state.clone(), &tracker, shutdown.clone()).await?;
    shutdown.cancelled().await;
    tracing::info!("stopping");
    state.router.close_all();
    snikket_runtime::shutdown::drain(&tracker, Duration::from_secs(10)).await;
    state.activity.flush(&data.store).await;
    data.store.close().await;
    Ok(())
}

/// Checkpoints the SQLite write-ahead log every second from a connection of its own, so that
/// commits (the archive's, which messages wait for) never carry a checkpoint's fsyncs.
fn spawn_checkpoints(
    store: snikket_store::Store,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = store.checkpoint().await {
                        tracing::warn!(error = %e, "checkpoint failed");
                    }
                }
            }
        }
    });
}
