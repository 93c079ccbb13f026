//! Lingering close (nginx `lingering_close`): when a response is sent before the request was
//! read in full (413, 431), closing at once would make the kernel answer the unread bytes with a
//! reset that destroys the response on its way. So on shutdown the write side is closed first and
//! the rest of the input is read and dropped, for a bounded time and size.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long the input is drained after the response.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much input is drained at most.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

enum State {
    Open,
    Draining,
    Done,
}

/// An I/O wrapper that lingers when shut down, and also when dropped without a shutdown (hyper
/// drops the connection after a parse error such as an oversized head).
pub struct Lingering<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<I>,
    state: State,
    deadline: Option<Pin<Box<Sleep>>>,
    drained: usize,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection already closed")
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<I> {
    /// Wraps `inner`.
    pub fn new(inner: I) -> Self {
        Lingering {
            inner: Some(inner),
            state: State::Open,
            deadline: None,
            drained: 0,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(i) => Pin::new(i).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(i) => Pin::new(i).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(i) => Pin::new(i).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(i) => Pin::new(i).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let Some(inner) = me.inner.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            match me.state {
                State::Open => {
                    let r = ready!(Pin::new(&mut *inner).poll_shutdown(cx));
                    if r.is_err() {
                        me.state = State::Done;
                        return Poll::Ready(r);
                    }
                    me.state = State::Draining;
                    me.deadline = Some(Box::pin(tokio::time::sleep(LINGER_TIME)));
                }
                State::Draining => {
                    if let Some(d) = me.deadline.as_mut() {
                        if d.as_mut().poll(cx).is_ready() {
                            me.state = State::Done;
                            continue;
                        }
                    }
                    let mut scratch = [0u8; 4096];
                    let mut rb = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut *inner).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                            me.drained += rb.filled().len();
                            if me.drained > LINGER_BYTES {
                                me.state = State::Done;
                            }
                        }
                        Poll::Ready(_) => me.state = State::Done,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<I> {
    fn drop(&mut self) {
        if matches!(self.state, State::Done) {
            return;
        }
        let (Some(mut inner), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tokio::time::timeout(LINGER_TIME, async {
                let _ = inner.shutdown().await;
                let mut scratch = vec![0u8; 4096];
                let mut drained = 0usize;
                while drained <= LINGER_BYTES {
                    match inner.read(&mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => drained += n,
                    }
                }
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_drains_unread_input_and_keeps_the_response() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut a = Lingering::new(a);
        b.write_all(&[7u8; 10_000]).await.unwrap();
        a.write_all(b"HTTP/1.1 413\r\n\r\n").await.unwrap();
        let closer = tokio::spawn(async move { a.shutdown().await });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 413\r\n\r\n");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), closer)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
