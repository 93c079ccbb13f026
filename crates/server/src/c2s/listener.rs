//! Accept loops for c2s (STARTTLS on 5222, direct TLS on 5223) with connection limits.

use crate::c2s::negotiate;
use crate::state::State;
use snikket_runtime::{CancellationToken, TaskTracker};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Connections allowed from one IP address at once (pre- and post-auth).
pub const MAX_CONNECTIONS_PER_IP: usize = 64;

/// Counts connections per IP; a guard decrements on drop.
#[derive(Default)]
pub struct IpLimiter {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one slot of an [`IpLimiter`].
pub struct IpSlot {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    /// Takes a slot for `ip`, or `None` when it has too many connections.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            limiter: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Binds the client ports on every configured interface and spawns their accept loops.
pub async fn start(
    state: Arc<State>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = &state.config;
    let mut bound = 0;
    for ip in &cfg.bind_interfaces {
        for (port, direct_tls) in [
            (cfg.server.c2s_port, false),
            (cfg.server.c2s_direct_tls_port, true),
        ] {
            let addr = SocketAddr::new(*ip, port);
            let listener = match bind(addr) {
                Ok(l) => l,
                Err(e) if ip.is_ipv6() => {
                    tracing::warn!(%addr, error = %e, "cannot listen on IPv6 address");
                    continue;
                }
                Err(e) => anyhow::bail!("binding c2s listener on {addr}: {e}"),
            };
            tracing::info!(%addr, direct_tls, "c2s listening");
            bound += 1;
            let st = Arc::clone(&state);
            let token = shutdown.clone();
            let tr = tracker.clone();
            tracker.spawn(accept_loop(listener, direct_tls, st, tr, token));
        }
    }
    if bound == 0 {
        anyhow::bail!("no c2s listener could be bound");
    }
    Ok(())
}

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    direct_tls: bool,
    state: Arc<State>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = state.ip_limiter.acquire(peer.ip(), MAX_CONNECTIONS_PER_IP) else {
            tracing::warn!(%peer, "too many connections from this address; refusing");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        state.trimmer.note();
        let st = Arc::clone(&state);
        let token = shutdown.clone();
        tracker.spawn(negotiate::handle(socket, peer, direct_tls, st, token, slot));
    }
}
