//! A response body that fails when the backend goes silent for too long mid-stream (nginx
//! `proxy_read_timeout` applies between reads, not only to the response head).

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The backend sent nothing for the idle period.
#[derive(Debug, thiserror::Error)]
#[error("backend sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// Wraps a body with an idle timer that restarts at every frame.
///
/// The timer is armed only when the body has to wait: a body whose frames are ready whenever
/// they are asked for (a small response read in one go) never touches the timer wheel.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame came since the timer was last armed.
    moved: bool,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleBody {
            inner,
            idle,
            timer: None,
            moved: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                me.moved = true;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timer = match &mut me.timer {
                    Some(t) => {
                        if me.moved {
                            t.as_mut().reset(Instant::now() + me.idle);
                        }
                        t
                    }
                    None => me.timer.insert(Box::pin(tokio::time::sleep(me.idle))),
                };
                me.moved = false;
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(me.idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// A backend that never sends anything.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_backend_fails_after_the_idle_period() {
        let mut body = IdleBody::new(Silent, Duration::from_secs(60));
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("sent nothing"));
    }

    #[tokio::test(start_paused = true)]
    async fn data_passes_through() {
        let body = IdleBody::new(
            Full::new(Bytes::from_static(b"abc")),
            Duration::from_secs(1),
        );
        assert_eq!(
            body.collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"abc")
        );
    }
}
