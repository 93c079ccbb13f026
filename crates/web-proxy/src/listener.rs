//! Accept loops: a connection limit, a TLS handshake deadline, HTTP/1.1 or HTTP/2 by ALPN, and
//! the slow-client limits (header read timeout, header size) nginx would enforce.

use crate::linger::Lingering;
use crate::proxy::{self, Conn, State};
use crate::route::Scheme;
use crate::ProxyError;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Open client connections across all listeners; further connections are closed at once.
pub const MAX_CONNECTIONS: usize = 2048;
/// Time a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send a complete request head, and the keep-alive idle limit (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request head (nginx: `large_client_header_buffers 4 8k`).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Time open connections get to finish their requests at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Binds a listening socket; IPv6 sockets are v6-only so `0.0.0.0` and `::` can coexist.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| ProxyError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Accepts connections until shutdown. `tls` is `None` for the plain HTTP listener.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    limit: Arc<Semaphore>,
) {
    let scheme = if tls.is_some() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let local = listener.local_addr().ok();
    let mut check = tokio::time::interval(crate::CERT_POLL);
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = check.tick() => {
                if scheme == Scheme::Http && !state.serve_http && state.ready() {
                    tracing::info!(addr = ?local, "certificate present and http not in SNIKKET_TWEAK_WEB_PROXY_PROTOS: closing the http listener");
                    break;
                }
                continue;
            }
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        state.tracker.clone().spawn(async move {
            let conn = Conn { peer, scheme };
            match tls {
                None => serve_http1(tcp, conn, state).await,
                Some(acceptor) => serve_tls(tcp, acceptor, conn, state).await,
            }
            drop(permit);
        });
    }
}

async fn serve_tls(tcp: TcpStream, acceptor: TlsAcceptor, conn: Conn, state: Arc<State>) {
    if !state.resolver.has_certificate() {
        // Startup mode (spec 6.5): no HTTPS until a certificate exists.
        return;
    }
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %conn.peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "tls handshake timed out");
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        serve_h2(stream, conn, state).await;
    } else {
        serve_http1(stream, conn, state).await;
    }
}

async fn serve_http1<I>(io: I, conn: Conn, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let st = state.clone();
    let svc = service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(proxy::handle(st, conn, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(100)
        .keep_alive(true);
    let c = builder
        .serve_connection(TokioIo::new(Lingering::new(io)), svc)
        .with_upgrades();
    tokio::pin!(c);
    tokio::select! {
        r = c.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %conn.peer, error = %e, "http/1 connection ended with an error");
            }
        }
        _ = state.shutdown.cancelled() => {
            c.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, c.as_mut()).await;
        }
    }
}

async fn serve_h2<I>(io: I, conn: Conn, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let st = state.clone();
    let svc = service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(proxy::handle(st, conn, req).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    let c = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(c);
    tokio::select! {
        r = c.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %conn.peer, error = %e, "http/2 connection ended with an error");
            }
        }
        _ = state.shutdown.cancelled() => {
            c.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, c.as_mut()).await;
        }
    }
}
