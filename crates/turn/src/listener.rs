//! Sockets facing clients: UDP and TCP on the STUN port, TLS on the TURN-over-TLS port.
//!
//! UDP datagrams are handled inline in the receive loop (no task per packet). Each TCP/TLS
//! connection is one task that splits the byte stream into STUN/ChannelData frames and owns a
//! writer task fed by a bounded channel; its allocation dies with the connection.

use crate::server::{ClientSink, FiveTuple, Server, Transport};
use crate::stun;
use crate::TurnError;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections without an allocation are closed after this much silence.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Simultaneous TCP/TLS connections per listener.
const MAX_CONNECTIONS: usize = 8192;
/// Largest frame a stream may announce (a STUN header's length field allows 65535 + 20).
const MAX_FRAME: usize = 65_536 + 20;

/// Binds a UDP socket (IPv6 sockets are IPv6-only so `0.0.0.0` and `::` can both be bound).
/// Returns the tokio socket for receiving and a plain clone for non-blocking sends.
pub fn bind_udp(addr: SocketAddr) -> Result<(UdpSocket, std::net::UdpSocket), TurnError> {
    let err = |source| TurnError::Bind {
        kind: "udp",
        addr,
        source,
    };
    let s =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    // Best effort: a bigger receive buffer absorbs bursts of media.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    let std_sock: std::net::UdpSocket = s.into();
    let tx = std_sock.try_clone().map_err(err)?;
    Ok((UdpSocket::from_std(std_sock).map_err(err)?, tx))
}

/// Binds a TCP listener.
pub fn bind_tcp(addr: SocketAddr, kind: &'static str) -> Result<TcpListener, TurnError> {
    let err = |source| TurnError::Bind { kind, addr, source };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    s.set_reuse_address(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    TcpListener::from_std(s.into()).map_err(err)
}

/// Serves one UDP socket until shutdown.
pub async fn serve_udp(
    server: Arc<Server>,
    socket: UdpSocket,
    tx: Arc<std::net::UdpSocket>,
    shutdown: CancellationToken,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "udp listener has no local address");
            return;
        }
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            },
        };
        let tuple = FiveTuple {
            transport: Transport::Udp,
            client: peer,
            server: local,
        };
        let sink = ClientSink::Udp {
            socket: Arc::clone(&tx),
            peer,
        };
        if let Some(resp) = server.handle(tuple, &sink, &buf[..n]) {
            if let Err(e) = tx.send_to(&resp, peer) {
                tracing::debug!(client = %peer, error = %e, "udp send error");
            }
        }
    }
}

/// Accepts TCP (or, with `tls`, TLS) connections until shutdown.
pub async fn serve_tcp(
    server: Arc<Server>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "tcp listener has no local address");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(client = %peer, "too many turn connections; refusing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let tuple = FiveTuple {
                        transport: Transport::Tcp,
                        client: peer,
                        server: local,
                    };
                    serve_stream(server, stream, tuple, shutdown).await;
                }
                Some(acceptor) => {
                    let tuple = FiveTuple {
                        transport: Transport::Tls,
                        client: peer,
                        server: local,
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_stream(server, s, tuple, shutdown).await,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "tls handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Runs one stream connection: frames in, responses and relayed data out.
async fn serve_stream<S>(
    server: Arc<Server>,
    stream: S,
    tuple: FiveTuple,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let conn = shutdown.child_token();
    let wconn = conn.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wconn.cancelled() => break,
                m = rx.recv() => match m {
                    Some(b) => if wr.write_all(&b).await.is_err() { break },
                    None => break,
                },
            }
        }
        let _ = wr.shutdown().await;
    });
    let sink = ClientSink::Stream(tx.clone());
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16_384];
    'conn: loop {
        loop {
            match stun::frame_len(&buf) {
                None => break,
                Some(Err(())) => {
                    tracing::debug!(client = %tuple.client, "not stun on a turn stream; closing");
                    break 'conn;
                }
                Some(Ok(n)) if n > MAX_FRAME => break 'conn,
                Some(Ok(n)) if buf.len() < n => break,
                Some(Ok(n)) => {
                    let frame: Vec<u8> = buf.drain(..n).collect();
                    if let Some(resp) = server.handle(tuple, &sink, &frame) {
                        if tx.send(resp).await.is_err() {
                            break 'conn;
                        }
                    }
                }
            }
        }
        let read = tokio::select! {
            _ = conn.cancelled() => break,
            r = tokio::time::timeout(IDLE_TIMEOUT, rd.read(&mut chunk)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                if !server.has_allocation(&tuple) {
                    tracing::debug!(client = %tuple.client, "idle turn connection closed");
                    break;
                }
            }
        }
    }
    server.remove(&tuple);
    conn.cancel();
    drop(sink);
    drop(tx);
    let _ = writer.await;
}
