//! A framed XML stream over any byte stream: read events with limits and timeouts, write bytes.

use minidom::Element;
use snikket_xmpp::framing::{writer, Event, Limits, StreamParser};
use snikket_xmpp::StreamError;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why reading the next event failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer sent bad XML or broke a limit; answer with this stream error.
    #[error("stream error: {0}")]
    Stream(#[from] StreamError),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The peer sent nothing for too long.
    #[error("timed out")]
    Timeout,
}

/// Read buffer of a plain (not yet encrypted) stream. TLS streams need none of their own: the
/// parser reads the decrypted records where rustls keeps them, so an idle session holds no read
/// buffer besides rustls' record buffer.
const PLAIN_READ_BUFFER: usize = 2048;

/// A plain TCP stream before STARTTLS.
pub type Plain = BufReader<TcpStream>;

/// A connection with an XMPP stream parser on top.
pub struct Conn<S> {
    io: S,
    parser: StreamParser,
    limits: Limits,
    content_ns: &'static str,
}

impl Conn<Plain> {
    /// Wraps a plain TCP socket (before STARTTLS) whose stanzas are in `content_ns`.
    pub fn plain(socket: TcpStream, limits: Limits, content_ns: &'static str) -> Self {
        Conn::with_namespace(
            BufReader::with_capacity(PLAIN_READ_BUFFER, socket),
            limits,
            content_ns,
        )
    }

    /// The socket, for the TLS handshake; unparsed input is discarded, as RFC 6120 §5.4.3.3
    /// requires.
    pub fn into_socket(self) -> TcpStream {
        self.io.into_inner()
    }
}

impl<S: AsyncBufRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a buffered stream (a TLS stream, or [`Plain`]).
    pub fn new(io: S, limits: Limits) -> Self {
        Self::with_namespace(io, limits, snikket_xmpp::framing::NS_CLIENT)
    }

    /// Wraps a stream whose stanzas are in `content_ns` (`jabber:server` for s2s).
    pub fn with_namespace(io: S, limits: Limits, content_ns: &'static str) -> Self {
        Conn {
            io,
            parser: StreamParser::with_content_namespace(limits, content_ns),
            limits,
            content_ns,
        }
    }

    /// Starts a new stream (after SASL success), keeping bytes the peer already sent.
    pub fn restart(&mut self) -> Result<(), StreamError> {
        let fresh = StreamParser::with_content_namespace(self.limits, self.content_ns);
        let old = std::mem::replace(&mut self.parser, fresh);
        let pending = old.into_unparsed();
        if !pending.is_empty() {
            self.parser.feed(&pending)?;
        }
        Ok(())
    }

    /// Changes the limits applied from the next stream restart on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The next event. Cancel-safe: input is consumed from the stream only in the poll that
    /// feeds it to the parser.
    ///
    /// When the peer has sent nothing more for now, the parser's buffers are released
    /// ([`StreamParser::release_idle`]): an idle session keeps only a few hundred bytes of parser
    /// state instead of rxml's token buffers.
    pub async fn next(&mut self) -> Result<Event, ConnError> {
        loop {
            if let Some(ev) = self.parser.next_event()? {
                return Ok(ev);
            }
            let Conn { io, parser, .. } = self;
            let mut released = false;
            let fed = std::future::poll_fn(|cx| {
                let data = match Pin::new(&mut *io).poll_fill_buf(cx) {
                    Poll::Ready(Ok(data)) => data,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnError::Io(e))),
                    Poll::Pending => {
                        if !released {
                            parser.release_idle();
                            released = true;
                        }
                        return Poll::Pending;
                    }
                };
                if data.is_empty() {
                    return Poll::Ready(Err(ConnError::Closed));
                }
                let n = data.len();
                let fed = parser.feed(data);
                Pin::new(&mut *io).consume(n);
                Poll::Ready(fed.map_err(ConnError::from))
            })
            .await;
            fed?;
        }
    }

    /// The next event, or `Timeout` after `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Event, ConnError> {
        tokio::time::timeout(limit, self.next())
            .await
            .unwrap_or(Err(ConnError::Timeout))
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Serializes and writes an element.
    pub async fn send_el(&mut self, el: &Element) -> std::io::Result<()> {
        let bytes = writer::element_to_bytes(el)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.send(&bytes).await
    }

    /// Sends a stream error and closes our side of the stream.
    pub async fn fail(&mut self, condition: &str, text: Option<&str>) {
        let mut out = writer::stream_error(condition, text);
        out.extend_from_slice(writer::STREAM_CLOSE);
        self.write_and_shut(&out).await;
    }

    /// Closes the stream cleanly.
    pub async fn close(&mut self) {
        self.write_and_shut(writer::STREAM_CLOSE).await;
    }

    /// Writes `last` and shuts the stream down (TLS: close_notify) in one flush, at most 5 s.
    async fn write_and_shut(&mut self, last: &[u8]) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if self.io.write_all(last).await.is_ok() {
                let _ = self.io.shutdown().await;
            }
        })
        .await;
    }

    /// The socket, for channel-binding data.
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}
