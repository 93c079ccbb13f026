//! Certificate manager: one ACME (HTTP-01) certificate for DOMAIN, groups.DOMAIN and share.DOMAIN,
//! kept in certbot's layout under `/snikket/letsencrypt`, with a self-signed bootstrap so the
//! other services never wait (spec sections 1.4, 1.7, 1.8 and 7).
//!
//! Consumers learn about new certificates by watching the live files
//! (`snikket_runtime::tls::CertResolver::watch`): the files are the contract certbot and operators
//! already use, and a poll needs no connection to this process, so nothing breaks when it restarts.

pub mod acme;
pub mod certbot_account;
pub mod client;
pub mod error;
pub mod grpc;
pub mod layout;
pub mod manager;
pub mod report;
pub mod wait;

pub use error::CertError;
pub use manager::Manager;

use anyhow::Context;
use snikket_config::Config;
use snikket_rpc::snikket::certs::v1::certs_server::CertsServer;
use snikket_rpc::snikket::status::v1::status_server::StatusServer;
use snikket_rpc::{check_loopback, SecretCheck};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs the certificate manager until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let manager = Arc::new(Manager::new(&config));
    // Before anything else (including the gRPC listener): the other services wait for files.
    manager
        .ensure_certificate()
        .context("installing a bootstrap certificate")?;
    manager.apply_owner();

    let secret = snikket_runtime::load_or_create_secret(&config.grpc_secret_path(), 0o640)
        .context("loading the internal gRPC secret")?;
    let addr = check_loopback(SocketAddr::new(
        config.grpc_interface,
        config.certs.grpc_port,
    ))
    .context("certs gRPC address")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding certs gRPC on {addr}"))?;
    tracing::info!(%addr, "certs gRPC listening");

    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let service = grpc::CertsService::new(manager.clone(), tx);
    let check = SecretCheck::new(secret.expose());
    let grpc_shutdown = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .add_service(CertsServer::with_interceptor(
            service.clone(),
            check.clone(),
        ))
        .add_service(StatusServer::with_interceptor(service, check))
        .serve_with_incoming_shutdown(tokio_stream_listener(listener), async move {
            grpc_shutdown.cancelled().await
        });
    let grpc_task = tokio::spawn(server);

    let result = manager.run(rx, shutdown.clone()).await;
    shutdown.cancel();
    match tokio::time::timeout(std::time::Duration::from_secs(5), grpc_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "certs gRPC server"),
        Ok(Err(e)) => tracing::warn!(error = %e, "certs gRPC task"),
        Err(_) => tracing::warn!("certs gRPC server did not stop in time"),
        Ok(Ok(Ok(()))) => {}
    }
    result.context("certificate manager")?;
    Ok(())
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
