//! Server-side TLS for client connections, on rustls' unbuffered API.
//!
//! `tokio_rustls` keeps rustls' 4 KiB record buffer for as long as a connection lives. Most client
//! sessions are idle most of the time (a phone in a pocket), so this stream reads records through
//! a buffer on the stack and holds heap buffers only while bytes are in flight: a partial record,
//! decrypted data the parser has not taken yet, or encrypted data the socket has not taken yet.
//! When the socket has nothing more to give, every buffer is given back.
//!
//! The unbuffered connection does not offer `export_keying_material`, which the `tls-exporter`
//! channel binding (RFC 9266) needs. rustls hands the TLS 1.3 exporter secret to the configured
//! [`KeyLog`] while it processes the handshake; [`config`] installs one that passes the secret to
//! the connection whose records are being processed on this thread at that moment, and nothing
//! anywhere else. The connection derives the 32-byte binding at once (RFC 8446 §7.5, through the
//! negotiated suite's own HKDF) and drops the secret.

use rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{KeyLog, ServerConfig, SupportedCipherSuite};
use snikket_xmpp::scram::{TLS_EXPORTER_LABEL as EXPORTER_LABEL, TLS_EXPORTER_LEN as EXPORTER_LEN};
use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket per call, into a buffer on the stack: one full TLS record.
const READ_CHUNK: usize = 16 * 1024 + 5 + 256;

/// Most ciphertext kept while waiting for the rest of a record or handshake flight. rustls joins
/// handshake messages of up to 64 KiB; records are at most 16 KiB plus overhead.
const MAX_INCOMING: usize = 64 * 1024 + READ_CHUNK;

/// Plaintext encrypted per `poll_write` call.
const MAX_WRITE: usize = 16 * 1024;

/// Encrypted bytes kept waiting for the socket before writers have to wait.
const HIGH_WATER: usize = 64 * 1024;

/// The key-log label rustls gives the TLS 1.3 exporter secret.
const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

/// `config` for client connections: the same, plus the key log that lets an unbuffered
/// connection compute its `tls-exporter` channel binding, and one session ticket per handshake
/// instead of rustls' two: a client keeps one connection, so one ticket serves its next
/// reconnect, and each ticket costs a key derivation, a record and a place in the cache.
pub fn config(base: Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut cfg = Arc::unwrap_or_clone(base);
    cfg.key_log = Arc::new(ExporterCapture);
    cfg.send_tls13_tickets = 1;
    Arc::new(cfg)
}

thread_local! {
    /// `Some` while this thread processes a handshake that wants its exporter secret.
    static CAPTURE: RefCell<Option<Option<OkmBlock>>> = const { RefCell::new(None) };
}

/// Passes the TLS 1.3 exporter secret to the connection being processed on this thread; logs
/// nothing and keeps nothing otherwise.
struct ExporterCapture;

impl std::fmt::Debug for ExporterCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExporterCapture")
    }
}

impl KeyLog for ExporterCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label != EXPORTER_SECRET {
            return;
        }
        CAPTURE.with(|c| {
            if let Some(slot) = c.borrow_mut().as_mut() {
                *slot = Some(OkmBlock::new(secret));
            }
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET && CAPTURE.with(|c| c.borrow().is_some())
    }
}

/// Disarms the capture when dropped, also on unwinding.
struct Armed;

impl Armed {
    fn new() -> Self {
        CAPTURE.with(|c| *c.borrow_mut() = Some(None));
        Armed
    }

    fn take(&self) -> Option<OkmBlock> {
        CAPTURE.with(|c| c.borrow_mut().as_mut().and_then(Option::take))
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) into `out`.
fn expand_label(
    expander: &dyn HkdfExpander,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Option<()> {
    const PREFIX: &[u8] = b"tls13 ";
    let len = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(PREFIX.len() + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    let info: [&[u8]; 6] = [&len, &label_len, PREFIX, label, &context_len, context];
    expander.expand_slice(&info, out).ok()
}

/// The TLS 1.3 exporter (RFC 8446 §7.5) for `label` with no context, from the exporter secret.
fn export(
    suite: SupportedCipherSuite,
    secret: &OkmBlock,
    label: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let SupportedCipherSuite::Tls13(suite) = suite else {
        return None;
    };
    let empty_hash = suite.common.hash_provider.hash(&[]);
    let mut derived = vec![0u8; suite.common.hash_provider.output_len()];
    expand_label(
        suite.hkdf_provider.expander_for_okm(secret).as_ref(),
        label,
        empty_hash.as_ref(),
        &mut derived,
    )?;
    let derived = OkmBlock::new(&derived);
    expand_label(
        suite.hkdf_provider.expander_for_okm(&derived).as_ref(),
        b"exporter",
        empty_hash.as_ref(),
        out,
    )
}

/// Where processing the records stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drive {
    /// The handshake needs more bytes from the peer.
    Handshaking,
    /// Everything received is processed; application data can be written.
    Open,
    /// Both sides have sent close_notify.
    Closed,
}

/// What to do once the connection can write application data.
enum Action<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// The connection state and the buffers that are not the incoming record buffer.
struct Core {
    conn: UnbufferedServerConnection,
    /// Decrypted data, from `plain_pos` on not yet consumed.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted data, from `out_pos` on not yet written to the socket.
    outgoing: Vec<u8>,
    out_pos: usize,
    binding: Option<[u8; EXPORTER_LEN]>,
    peer_closed: bool,
    close_sent: bool,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends what `f` writes to `out`, growing the room when `f` says it needs more.
fn append_with<E>(
    out: &mut Vec<u8>,
    mut room: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

/// The room an encoding needs, when that is why it failed.
fn encode_needs(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// The room an encryption needs, when that is why it failed.
fn encrypt_needs(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encode_error(e: EncodeError) -> io::Error {
    io::Error::other(e.to_string())
}

fn encrypt_error(e: EncryptError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Core {
    /// After a TLS error: the alert rustls has for the peer, if any, into `outgoing`.
    fn queue_alert(&mut self) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
            let _ = append_with(&mut self.outgoing, 64, |buf| data.encode(buf), encode_needs);
        }
    }

    /// Processes the records in `input` until the connection waits for the peer or can write,
    /// doing `action` in the latter case. Returns how many bytes of `input` are done with.
    fn drive(&mut self, input: &mut [u8], mut action: Action<'_>) -> io::Result<(usize, Drive)> {
        let Core {
            conn,
            plain,
            outgoing,
            binding,
            peer_closed,
            close_sent,
            ..
        } = self;
        let mut done = 0;
        loop {
            let armed = conn.is_handshaking().then(Armed::new);
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(&mut input[done..]);
            let secret = armed.as_ref().and_then(Armed::take);
            drop(armed);
            let state = state.map_err(tls_error)?;
            let stop = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    append_with(outgoing, 1024, |buf| data.encode(buf), encode_needs)
                        .map_err(encode_error)?;
                    None
                }
                // The encoded records are in `outgoing`; the caller writes them before it waits
                // for the peer.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Drive::Handshaking),
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    None
                }
                ConnectionState::Closed => {
                    *peer_closed = true;
                    Some(Drive::Closed)
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    match std::mem::replace(&mut action, Action::Nothing) {
                        Action::Nothing => {}
                        Action::Encrypt(data) => append_with(
                            outgoing,
                            data.len() + (data.len() / (16 * 1024) + 1) * 64,
                            |buf| traffic.encrypt(data, buf),
                            encrypt_needs,
                        )
                        .map_err(encrypt_error)?,
                        Action::CloseNotify => {
                            append_with(
                                outgoing,
                                64,
                                |buf| traffic.queue_close_notify(buf),
                                encrypt_needs,
                            )
                            .map_err(encrypt_error)?;
                            *close_sent = true;
                        }
                    }
                    Some(Drive::Open)
                }
                // Early data is not enabled, so rustls never offers it; anything else is a state
                // this version does not know.
                other => return Err(io::Error::other(format!("unexpected TLS state {other:?}"))),
            };
            if let Some(secret) = secret {
                if let Some(suite) = conn.negotiated_cipher_suite() {
                    let mut out = [0u8; EXPORTER_LEN];
                    if export(suite, &secret, EXPORTER_LABEL, &mut out).is_some() {
                        *binding = Some(out);
                    }
                }
            }
            done += discard;
            if let Some(stop) = stop {
                return Ok((done, stop));
            }
        }
    }
}

/// A server-side TLS stream over `IO` that holds no buffers while idle.
pub struct TlsConn<IO> {
    io: IO,
    /// Ciphertext kept from earlier reads: a partial record, or handshake records rustls is
    /// still joining.
    incoming: Vec<u8>,
    core: Core,
    read_eof: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsConn<IO> {
    /// Runs the server side of a TLS handshake on `io`.
    pub async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut tls = TlsConn {
            io,
            incoming: Vec::new(),
            core: Core {
                conn,
                plain: Vec::new(),
                plain_pos: 0,
                outgoing: Vec::new(),
                out_pos: 0,
                binding: None,
                peer_closed: false,
                close_sent: false,
            },
            read_eof: false,
        };
        let mut drive = Drive::Handshaking;
        loop {
            std::future::poll_fn(|cx| tls.poll_write_out(cx)).await?;
            match drive {
                Drive::Open => break,
                Drive::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "closed during the handshake",
                    ))
                }
                Drive::Handshaking => {}
            }
            let read = std::future::poll_fn(|cx| tls.poll_read_records(cx)).await;
            drive = match read {
                Ok(Some(d)) => d,
                Err(e) => {
                    // Tell the peer why (an unsupported version, a bad message, ...) when rustls
                    // has an alert for it; the caller's deadline bounds this write.
                    tls.core.queue_alert();
                    let _ = std::future::poll_fn(|cx| tls.poll_write_out(cx)).await;
                    return Err(e);
                }
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during the handshake",
                    ))
                }
            };
        }
        tls.release_idle();
        Ok(tls)
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.core.conn.protocol_version()
    }

    /// The `tls-exporter` channel binding (TLS 1.3 only).
    pub fn exporter_binding(&self) -> Option<&[u8]> {
        self.core.binding.as_ref().map(|b| &b[..])
    }

    /// Heap bytes held by this stream's own buffers (not rustls' key schedule).
    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.core.plain.capacity() + self.core.outgoing.capacity()
    }

    /// Reads once from the socket and processes the complete records. `None` at the end of the
    /// socket's input.
    fn poll_read_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Drive>>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Ok(None));
        }
        let drive = if self.incoming.is_empty() {
            let input = buf.filled_mut();
            let (done, drive) = self.core.drive(input, Action::Nothing)?;
            self.incoming.extend_from_slice(&input[done..]);
            drive
        } else {
            if self.incoming.len() + buf.filled().len() > MAX_INCOMING {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message too large",
                )));
            }
            self.incoming.extend_from_slice(buf.filled());
            let (done, drive) = self.core.drive(&mut self.incoming, Action::Nothing)?;
            self.incoming.drain(..done);
            drive
        };
        Poll::Ready(Ok(Some(drive)))
    }

    /// Writes the encrypted bytes waiting for the socket.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let core = &mut self.core;
        while core.out_pos < core.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &core.outgoing[core.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            core.out_pos += n;
        }
        core.outgoing = Vec::new();
        core.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Gives back the buffers that hold nothing.
    fn release_idle(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if self.core.plain_pos >= self.core.plain.len() {
            self.core.plain = Vec::new();
            self.core.plain_pos = 0;
        }
    }

    /// Encrypts `data` (or a close_notify) into the outgoing buffer.
    fn queue(&mut self, action: Action<'_>) -> io::Result<()> {
        let (done, drive) = self.core.drive(&mut self.incoming, action)?;
        self.incoming.drain(..done);
        match drive {
            Drive::Open => Ok(()),
            Drive::Handshaking | Drive::Closed => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS connection cannot send",
            )),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = {
            let data = ready!(self.as_mut().poll_fill_buf(cx))?;
            let n = data.len().min(buf.remaining());
            buf.put_slice(&data[..n]);
            n
        };
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncBufRead for TlsConn<IO> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        loop {
            if this.core.plain_pos < this.core.plain.len() {
                break;
            }
            if this.core.peer_closed || this.read_eof {
                return Poll::Ready(Ok(&[]));
            }
            // Post-handshake messages (key updates, tickets) go out while we wait to read.
            if this.core.out_pos < this.core.outgoing.len() {
                if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            match this.poll_read_records(cx) {
                Poll::Pending => {
                    this.release_idle();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(None)) => this.read_eof = true,
                Poll::Ready(Ok(Some(_))) => {}
            }
        }
        Poll::Ready(Ok(&this.core.plain[this.core.plain_pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let core = &mut self.get_mut().core;
        core.plain_pos = (core.plain_pos + amt).min(core.plain.len());
        if core.plain_pos == core.plain.len() {
            core.plain.clear();
            core.plain_pos = 0;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.core.outgoing.len() - this.core.out_pos >= HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        if this.core.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(MAX_WRITE);
        this.queue(Action::Encrypt(&buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.core.close_sent {
            this.queue(Action::CloseNotify)?;
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    fn server_config(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<ServerConfig>, CertificateDer<'static>) {
        let key = rcgen_key();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![key.0.clone()], key.1)
                    .map_err(|e| e.to_string())
            });
        match cfg {
            Ok(cfg) => (config(Arc::new(cfg)), key.0),
            Err(e) => panic!("server config: {e}"),
        }
    }

    fn rcgen_key() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let (cert, key) = match snikket_runtime::tls::self_signed(&["chat.example".into()], 1) {
            Ok(pair) => pair,
            Err(e) => panic!("self-signed: {e}"),
        };
        let cert = CertificateDer::from_pem_slice(cert.as_bytes());
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes());
        match (cert, key) {
            (Ok(c), Ok(k)) => (c, k),
            _ => panic!("parsing the self-signed pair"),
        }
    }

    fn client(
        cert: CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        assert!(roots.add(cert).is_ok());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = match rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
        {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            Err(e) => panic!("client config: {e}"),
        };
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    async fn pair(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (
        TlsConn<tokio::io::DuplexStream>,
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
    ) {
        let (cfg, cert) = server_config(versions);
        let (a, b) = tokio::io::duplex(4096);
        let name = match ServerName::try_from("chat.example") {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let connector = client(cert, versions);
        let (server, client) = tokio::join!(TlsConn::accept(a, cfg), connector.connect(name, b));
        match (server, client) {
            (Ok(s), Ok(c)) => (s, c),
            (s, c) => panic!("handshake: server {:?}, client {:?}", s.err(), c.err()),
        }
    }

    #[tokio::test]
    async fn tls13_binding_matches_the_clients_exporter() {
        let (server, client) = pair(&[&rustls::version::TLS13]).await;
        let expected = client
            .get_ref()
            .1
            .export_keying_material(vec![0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
            .ok();
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert!(expected.is_some());
        assert_eq!(server.exporter_binding().map(<[u8]>::to_vec), expected);
    }

    #[tokio::test]
    async fn no_secret_is_captured_outside_a_handshake() {
        let (_server, _client) = pair(&[&rustls::version::TLS13]).await;
        assert!(CAPTURE.with(|c| c.borrow().is_none()));
        assert!(!ExporterCapture.will_log(EXPORTER_SECRET));
    }

    async fn exchange_and_idle(versions: &[&'static rustls::SupportedProtocolVersion]) {
        let (mut server, mut client) = pair(versions).await;
        // Larger than a record, a read chunk and the duplex pipe, both ways.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let to_server = big.clone();
        let writer = async move {
            client.write_all(&to_server).await?;
            client.flush().await?;
            let mut back = vec![0u8; 100_000];
            client.read_exact(&mut back).await?;
            Ok::<_, io::Error>((client, back))
        };
        let echo = async {
            let mut got = vec![0u8; 100_000];
            server.read_exact(&mut got).await?;
            server.write_all(&got).await?;
            server.flush().await?;
            Ok::<_, io::Error>(got)
        };
        let (client_side, got) = tokio::join!(writer, echo);
        let (mut client, back) = match (client_side, got) {
            (Ok(c), Ok(g)) => {
                assert!(g == big, "the server received other bytes");
                c
            }
            (c, g) => panic!("exchange: client {:?}, server {:?}", c.err(), g.err()),
        };
        assert!(back == big, "the client received other bytes");
        // Nothing more to read: the stream gives all its buffers back.
        let pending = std::future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut server).poll_fill_buf(cx).is_pending())
        })
        .await;
        assert!(pending);
        assert_eq!(server.buffered_capacity(), 0);
        // The client's close_notify ends the server's input; the server's ends the client's.
        assert!(client.shutdown().await.is_ok());
        assert!(matches!(server.fill_buf().await, Ok(b) if b.is_empty()));
        assert!(server.shutdown().await.is_ok());
        let mut rest = Vec::new();
        assert!(client.read_to_end(&mut rest).await.is_ok());
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn tls13_carries_data_and_holds_no_buffers_when_idle() {
        exchange_and_idle(&[&rustls::version::TLS13]).await;
    }

    #[tokio::test]
    async fn tls12_carries_data_and_has_no_exporter_binding() {
        let (server, _client) = pair(&[&rustls::version::TLS12]).await;
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert!(server.exporter_binding().is_none());
        exchange_and_idle(&[&rustls::version::TLS12]).await;
    }

    #[tokio::test]
    async fn garbage_fails_the_handshake() {
        let (cfg, _) = server_config(&[&rustls::version::TLS13]);
        let (a, mut b) = tokio::io::duplex(4096);
        let peer = async move {
            let _ = b
                .write_all(b"<stream:stream xmlns='jabber:client'>\r\n")
                .await;
            let mut sink = Vec::new();
            let _ = b.read_to_end(&mut sink).await;
        };
        let (accepted, ()) = tokio::join!(TlsConn::accept(a, cfg), peer);
        assert!(accepted.is_err());
    }

    #[tokio::test]
    async fn a_client_without_a_common_version_is_told_so() {
        let (cfg, cert) = server_config(&[&rustls::version::TLS13]);
        let (a, b) = tokio::io::duplex(4096);
        let name = match ServerName::try_from("chat.example") {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let connector = client(cert, &[&rustls::version::TLS12]);
        let (server, client) = tokio::join!(TlsConn::accept(a, cfg), connector.connect(name, b));
        assert!(server.is_err());
        let Err(e) = client else {
            panic!("the client finished a handshake the server refused")
        };
        assert!(
            format!("{e:?}").contains("AlertReceived(ProtocolVersion)"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_leaves_mid_handshake_is_an_error() {
        let (cfg, _) = server_config(&[&rustls::version::TLS13]);
        let (a, b) = tokio::io::duplex(4096);
        drop(b);
        assert!(TlsConn::accept(a, cfg).await.is_err());
    }
}
