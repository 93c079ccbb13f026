//! Backend connections: plain HTTP/1.1 with keep-alive, driven from the task of the request that
//! uses them.
//!
//! A request checks an idle connection out of its backend's [`Pool`] (or opens one), polls the
//! connection future itself while it waits for the response head, and hands it to the response
//! body ([`PooledBody`]), which keeps polling it while the body streams and puts it back into the
//! pool once the body has ended. No connection task, channel hop or cross-task wake-up sits
//! between the client side and the backend side of an exchange. Idle connections are not polled;
//! one that the backend closed meanwhile is noticed (and dropped) at the next checkout.

use crate::proxy::Body;
use crate::UpstreamError;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::client::conn::TrySendError;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Connecting to a backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections older than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per backend.
const MAX_IDLE: usize = 64;

type Sender = http1::SendRequest<Body>;
type Connection = http1::Connection<TokioIo<TcpStream>, Body>;

/// An open backend connection: the request side and the future that drives the socket.
pub struct Conn {
    sender: Sender,
    /// `None` once the connection has finished (closed by either side, or spawned off).
    conn: Option<Connection>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle keep-alive connections to one backend.
pub struct Pool {
    authority: String,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// A pool for the backend at `authority` (`host:port`).
    pub fn new(authority: String) -> Pool {
        Pool {
            authority,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The backend's `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The most recently used idle connection that is still open, if any.
    pub async fn checkout(&self) -> Option<Conn> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut c = idle.conn;
            if poll_fn(|cx| Poll::Ready(c.poll_usable(cx))).await {
                return Some(c);
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Oldest first: drop what has been idle too long.
        let stale = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) > IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: now });
        }
    }

    /// Opens a new connection.
    pub async fn connect(&self) -> Result<Conn, UpstreamError> {
        let authority = &self.authority;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
            .await
            .map_err(|_| UpstreamError::Connect(format!("{authority}: connect timed out")))?
            .map_err(|e| UpstreamError::Connect(format!("{authority}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Protocol(format!("{authority}: {e}")))?;
        Ok(Conn {
            sender,
            conn: Some(conn),
        })
    }
}

impl Conn {
    /// Lets the connection notice a close by the backend, then asks whether a request can go.
    fn poll_usable(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        if Pin::new(conn).poll(cx).is_ready() {
            self.conn = None;
            return false;
        }
        matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            // Errors reach the pending request or the response body; the result itself only
            // says that the connection is finished.
            if Pin::new(conn).poll(cx).is_ready() {
                self.conn = None;
            }
        }
    }

    /// Hands the connection future to a task of its own (needed for protocol upgrades, which
    /// hyper completes only there).
    pub fn spawn_with_upgrades(&mut self) {
        if let Some(conn) = self.conn.take() {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "backend connection ended with an error");
                }
            });
        }
    }

    /// Sends `req` and waits for the response head while driving the connection. On failure
    /// the request comes back if it never reached the backend.
    pub async fn send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        let fut = self.sender.try_send_request(req);
        tokio::pin!(fut);
        poll_fn(|cx| {
            self.poll_conn(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }
}

/// A backend response body that drives its connection and returns it to the pool after the
/// last frame.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Conn>,
    pool: Arc<Pool>,
    done: bool,
}

impl PooledBody {
    /// Wraps the body of a response received on `conn`.
    pub fn new(inner: Incoming, conn: Conn, pool: Arc<Pool>) -> PooledBody {
        let done = hyper::body::Body::is_end_stream(&inner);
        PooledBody {
            inner,
            conn: Some(conn),
            pool,
            done,
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let me = &mut *self;
        if let Some(c) = me.conn.as_mut() {
            c.poll_conn(cx);
        }
        let r = Pin::new(&mut me.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => me.done = true,
            Poll::Ready(Some(Ok(_))) => me.done = me.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => me.conn = None,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if !self.done {
            return;
        }
        if let Some(c) = self.conn.take() {
            if c.conn.is_some() {
                self.pool.checkin(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend that answers `requests_per_conn` requests per connection with `body`, then
    /// closes; counts the connections it accepted.
    async fn backend(requests_per_conn: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..requests_per_conn {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(path: &str) -> Request<Body> {
        let mut req = Request::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, "example.test".parse().unwrap());
        req
    }

    async fn exchange(pool: &Arc<Pool>) -> Bytes {
        let mut conn = match pool.checkout().await {
            Some(c) => c,
            None => pool.connect().await.unwrap(),
        };
        let resp = conn.send(get("/")).await.unwrap();
        let body = PooledBody::new(resp.into_body(), conn, pool.clone());
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_finished_exchange_leaves_its_connection_for_the_next() {
        let (addr, accepted) = backend(100).await;
        let pool = Arc::new(Pool::new(addr));
        for _ in 0..5 {
            assert_eq!(exchange(&pool).await, Bytes::from_static(b"ok"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_reused() {
        let (addr, accepted) = backend(1).await;
        let pool = Arc::new(Pool::new(addr));
        assert_eq!(exchange(&pool).await, Bytes::from_static(b"ok"));
        // Give the backend's close time to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.checkout().await.is_none());
        assert_eq!(exchange(&pool).await, Bytes::from_static(b"ok"));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_abandoned_body_takes_its_connection_along() {
        let (addr, accepted) = backend(100).await;
        let pool = Arc::new(Pool::new(addr));
        let mut conn = pool.connect().await.unwrap();
        let resp = conn.send(get("/")).await.unwrap();
        drop(PooledBody::new(resp.into_body(), conn, pool.clone()));
        assert!(pool.checkout().await.is_none());
        assert_eq!(exchange(&pool).await, Bytes::from_static(b"ok"));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unreachable_backends_are_connect_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = Pool::new(addr);
        assert!(matches!(
            pool.connect().await,
            Err(UpstreamError::Connect(_))
        ));
    }
}
