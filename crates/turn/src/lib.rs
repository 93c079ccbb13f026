//! Snikket's STUN/TURN relay (RFC 8489, RFC 8656) replacing coturn: UDP relays from a bounded
//! port range, TURN REST shared-secret credentials, a deny-by-default peer policy, quotas, and
//! counters over loopback gRPC.

pub mod address;
pub mod auth;
mod error;
pub mod grpc;
pub mod listener;
pub mod policy;
pub mod ports;
pub mod server;
pub mod stun;

pub use error::TurnError;

use anyhow::Context;
use snikket_config::Config;
use snikket_rpc::snikket::status::v1::status_server::StatusServer;
use snikket_rpc::snikket::turn::v1::turn_status_server::TurnStatusServer;
use snikket_rpc::SecretCheck;
use snikket_runtime::tls::{server_config, CertResolver, CertSource};
use snikket_runtime::{load_or_create_secret, CancellationToken, Secret, TaskTracker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often the certificate files are checked for a renewal.
const CERT_POLL: Duration = Duration::from_secs(10);

/// Runs the TURN server until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if !config.turn.enabled {
        tracing::info!("TURN server disabled by environment, not launching.");
        return Ok(());
    }
    let secret = match &config.turn.secret {
        Some(s) => Secret::new(s.clone()),
        None => load_or_create_secret(&config.turn_secret_path(), 0o640)
            .map_err(TurnError::Secret)
            .with_context(|| format!("turn secret {}", config.turn_secret_path().display()))?,
    };
    let relay = address::select(&config).await?;
    tracing::info!(bind = %relay.bind, advertised = %relay.advertised, "relay address");
    let tracker = TaskTracker::new();
    let ports = ports::PortPool::new(config.turn.min_port, config.turn.max_port);
    let calls_supported = config.turn.calls_supported();
    let srv = server::Server::new(
        auth::Auth::new(secret, config.domain.ascii.clone()),
        policy::PeerPolicy::new(config.turn.allowed_peers.clone()),
        Arc::clone(&ports),
        server::Settings {
            relay_bind: relay.bind,
            relay_advertised: relay.advertised,
            user_quota: config.turn.user_quota,
            total_quota: config.turn.total_quota,
            max_bps: config.turn.max_bps,
            calls_supported,
        },
        tracker.clone(),
        shutdown.clone(),
    );

    // Bind everything first so a port conflict fails the start, not a task later.
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut tls = Vec::new();
    for ip in &config.bind_interfaces {
        let addr = SocketAddr::new(*ip, config.turn.port);
        udp.push(listener::bind_udp(addr)?);
        tcp.push(listener::bind_tcp(addr, "tcp")?);
        if let Some(p) = config.turn.tls_port {
            tls.push(listener::bind_tcp(SocketAddr::new(*ip, p), "tls")?);
        }
    }
    let grpc_addr = SocketAddr::new(config.grpc_interface, config.turn.grpc_port);
    snikket_rpc::check_loopback(grpc_addr).context("turn grpc address")?;
    let grpc_listener = listener::bind_tcp(grpc_addr, "grpc")?;
    let grpc_secret = load_or_create_secret(&config.grpc_secret_path(), 0o640)
        .map_err(TurnError::Secret)
        .context("internal grpc secret")?;

    let acceptor = if tls.is_empty() {
        None
    } else {
        let resolver = CertResolver::new(CertSource::live_dir(&config.cert_live_dir()));
        if !resolver.has_certificate() {
            tracing::warn!(dir = %config.cert_live_dir().display(), "no certificate yet; TURN over TLS starts working once it appears");
        }
        resolver.watch(CERT_POLL, shutdown.clone());
        let cfg =
            server_config(config.server.tls_profile, resolver, &[]).map_err(TurnError::Tls)?;
        Some(tokio_rustls::TlsAcceptor::from(cfg))
    };

    for (s, tx) in udp {
        tracing::info!(addr = ?s.local_addr().ok(), "listening (stun/turn udp)");
        tracker.spawn(listener::serve_udp(
            Arc::clone(&srv),
            s,
            Arc::new(tx),
            shutdown.clone(),
        ));
    }
    for l in tcp {
        tracing::info!(addr = ?l.local_addr().ok(), "listening (stun/turn tcp)");
        tracker.spawn(listener::serve_tcp(
            Arc::clone(&srv),
            l,
            None,
            tracker.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(acceptor) = acceptor {
        for l in tls {
            tracing::info!(addr = ?l.local_addr().ok(), "listening (turn tls)");
            tracker.spawn(listener::serve_tcp(
                Arc::clone(&srv),
                l,
                Some(acceptor.clone()),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
    }

    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let api = grpc::StatusApi::new(Arc::clone(&srv), started_at, calls_supported);
    let check = SecretCheck::new(grpc_secret.expose());
    let grpc_shutdown = shutdown.clone();
    tracing::info!(addr = %grpc_addr, "listening (turn grpc)");
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TurnStatusServer::with_interceptor(
                api.clone(),
                check.clone(),
            ))
            .add_service(StatusServer::with_interceptor(api, check))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                async move { grpc_shutdown.cancelled().await },
            ),
    );

    let sweeper_srv = Arc::clone(&srv);
    let sweeper_stop = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = sweeper_stop.cancelled() => break,
                _ = tick.tick() => sweeper_srv.sweep(),
            }
        }
    });
    tracing::info!(
        min_port = config.turn.min_port,
        max_port = config.turn.max_port,
        calls_supported,
        realm = %config.domain.ascii,
        "turn server started"
    );

    shutdown.cancelled().await;
    tracing::info!("turn server stopping");
    snikket_runtime::shutdown::drain(&tracker, Duration::from_secs(5)).await;
    match tokio::time::timeout(Duration::from_secs(5), grpc).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "grpc server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "grpc task failed"),
        _ => {}
    }
    Ok(())
}

/// The `healthcheck` command: a STUN Binding request over UDP to the TURN port must get a
/// Binding success response with our transaction id. With TURN disabled there is nothing to check.
pub async fn healthcheck(config: &Config) -> Result<(), String> {
    use snikket_runtime::health::{probe_addr, TIMEOUT};
    if !config.turn.enabled {
        return Ok(());
    }
    let addr = probe_addr(&config.bind_interfaces, config.turn.port);
    let tid: [u8; 12] = rand::random();
    let request = stun::Builder::new(stun::method::BINDING, stun::Class::Request, tid)
        .add_fingerprint()
        .finish();
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let work = async {
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        socket
            .connect(addr)
            .await
            .map_err(|e| format!("TURN server {addr}: {e}"))?;
        let mut buf = vec![0u8; stun::MAX_MESSAGE_LEN];
        // UDP may drop a datagram: ask up to three times within the budget.
        for _ in 0..3 {
            socket
                .send(&request)
                .await
                .map_err(|e| format!("sending to the TURN server {addr}: {e}"))?;
            let wait = tokio::time::timeout(TIMEOUT / 4, socket.recv(&mut buf)).await;
            let n = match wait {
                Ok(Ok(n)) => n,
                // Connection refused (ICMP port unreachable): nobody listens.
                Ok(Err(e)) => return Err(format!("TURN server not answering on {addr}: {e}")),
                Err(_) => continue,
            };
            if let Some(h) = buf.get(..n).and_then(stun::header) {
                if h.tid == tid && h.method == stun::method::BINDING {
                    return if h.class == stun::Class::Success {
                        Ok(())
                    } else {
                        Err(format!("TURN server {addr} refused a STUN binding request"))
                    };
                }
            }
        }
        Err(format!("no STUN answer from the TURN server on {addr}"))
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("no STUN answer from the TURN server on {addr}")))
}
