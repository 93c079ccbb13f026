//! One XMPP client connection: STARTTLS (TLS 1.3, no resumption), SCRAM-SHA-1, bind, presence.

use crate::scram::ScramClient;
use anyhow::{anyhow, bail, Context, Result};
use minidom::Element;
use snikket_xmpp::framing::{Event, Limits, StreamParser};
use snikket_xmpp::scram::{decode_payload, encode_payload};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    /// Loopback address of the c2s port.
    pub addr: SocketAddr,
    /// XMPP domain (also the TLS server name).
    pub domain: String,
    /// TLS client configuration trusting the bench certificate.
    pub tls: Arc<rustls::ClientConfig>,
    /// Password of every bench account.
    pub password: String,
    /// Per-step timeout.
    pub timeout: Duration,
    /// How many loopback source addresses to spread connections over (0: the default one).
    pub source_ips: usize,
}

/// Source addresses handed out round-robin (servers may cap connections per IP).
static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

/// Connects from one of `target.source_ips` loopback addresses (127.0.1.1, 127.0.1.2, ...).
async fn connect(target: &Target) -> Result<TcpStream> {
    if target.source_ips == 0 || !target.addr.is_ipv4() {
        return Ok(TcpStream::connect(target.addr).await?);
    }
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % target.source_ips;
    let ip = Ipv4Addr::new(127, 1 + (n / 250) as u8, 1, (n % 250) as u8 + 1);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip.into(), 0))?;
    Ok(socket.connect(target.addr).await?)
}

/// Builds a TLS 1.3-only client config trusting the certificates in `ca_file`, with session
/// resumption off so that every login does a full handshake.
pub fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.context("parsing certificate")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A stream plus its XML parser.
pub struct Conn<S> {
    /// The byte stream.
    pub io: S,
    parser: StreamParser,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Conn<S> {
        Conn {
            io,
            parser: StreamParser::new(Limits::default()),
            buf: vec![0u8; 16384],
        }
    }

    async fn send(&mut self, data: &str) -> Result<()> {
        self.io.write_all(data.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn open_stream(&mut self, domain: &str) -> Result<()> {
        self.parser = StreamParser::new(Limits::default());
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
        ))
        .await
    }

    async fn expect(&mut self, name: &str, ns: &str) -> Result<Element> {
        let el = self.next_element().await?;
        if el.is(name, ns) {
            Ok(el)
        } else {
            bail!(
                "expected <{name}/>, got <{}/>: {}",
                el.name(),
                String::from(&el)
            )
        }
    }

    /// Splits into a reading connection (keeping the parser state) and a write half.
    pub fn split(self) -> (Conn<ReadHalf<S>>, WriteHalf<S>) {
        let (r, w) = tokio::io::split(self.io);
        (
            Conn {
                io: r,
                parser: self.parser,
                buf: self.buf,
            },
            w,
        )
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// Next top-level element; stream headers are skipped, stream close is an error.
    pub async fn next_element(&mut self) -> Result<Element> {
        loop {
            match self.parser.next_event() {
                Ok(Some(Event::Stanza { element, .. })) => return Ok(element),
                Ok(Some(Event::StreamOpen(_))) => continue,
                Ok(Some(Event::StreamClose)) => bail!("server closed the stream"),
                Ok(None) => {}
                Err(e) => bail!("stream error: {e}"),
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.parser
                .feed(&self.buf[..n])
                .map_err(|e| anyhow!("stream error: {e}"))?;
        }
    }
}

/// An online session: the TLS stream with its parser, split off by the caller as needed.
pub type Session = Conn<TlsStream<TcpStream>>;

/// Logs `user` in (until the server answered a ping sent after initial presence).
pub async fn login(target: &Target, user: &str) -> Result<Session> {
    tokio::time::timeout(target.timeout * 4, login_inner(target, user))
        .await
        .map_err(|_| anyhow!("login of {user} timed out"))?
}

async fn login_inner(target: &Target, user: &str) -> Result<Session> {
    if !target.addr.ip().is_loopback() {
        bail!("refusing non-loopback target {}", target.addr);
    }
    let tcp = connect(target).await?;
    tcp.set_nodelay(true)?;
    let mut plain = Conn::new(tcp);
    plain.open_stream(&target.domain).await?;
    let features = plain
        .expect("features", "http://etherx.jabber.org/streams")
        .await?;
    if features.get_child("starttls", NS_TLS).is_none() {
        bail!("no STARTTLS offered");
    }
    plain.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await?;
    plain.expect("proceed", NS_TLS).await?;
    let name = rustls_pki_types::ServerName::try_from(target.domain.clone())?;
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, plain.io)
        .await?;
    let mut conn = Conn::new(tls);
    conn.open_stream(&target.domain).await?;
    let features = conn
        .expect("features", "http://etherx.jabber.org/streams")
        .await?;
    let offers_sha1 = features
        .get_child("mechanisms", NS_SASL)
        .map(|m| m.children().any(|c| c.text() == "SCRAM-SHA-1"))
        .unwrap_or(false);
    if !offers_sha1 {
        bail!("SCRAM-SHA-1 not offered");
    }
    let mut scram = ScramClient::new(user, &target.password);
    conn.send(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{}</auth>",
        encode_payload(&scram.client_first())
    ))
    .await?;
    let challenge = conn.expect("challenge", NS_SASL).await?;
    let server_first = decode_payload(&challenge.text()).map_err(|e| anyhow!("{e}"))?;
    let client_final = scram.client_final(&server_first)?;
    conn.send(&format!(
        "<response xmlns='{NS_SASL}'>{}</response>",
        encode_payload(&client_final)
    ))
    .await?;
    let success = conn.next_element().await?;
    if !success.is("success", NS_SASL) {
        bail!(
            "authentication of {user} failed: {}",
            String::from(&success)
        );
    }
    scram.verify(&decode_payload(&success.text()).map_err(|e| anyhow!("{e}"))?)?;
    conn.open_stream(&target.domain).await?;
    conn.expect("features", "http://etherx.jabber.org/streams")
        .await?;
    conn.send(&format!(
        "<iq type='set' id='b'><bind xmlns='{NS_BIND}'><resource>lg</resource></bind></iq>"
    ))
    .await?;
    let bound = conn.expect("iq", "jabber:client").await?;
    if bound.attr("type") != Some("result") {
        bail!("bind failed: {}", String::from(&bound));
    }
    conn.send("<presence/><iq type='get' id='online'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await?;
    loop {
        let el = conn.next_element().await?;
        if el.name() == "iq" && el.attr("id") == Some("online") {
            return Ok(conn);
        }
    }
}

/// Closes the stream politely without waiting for the server.
pub async fn close(mut session: Session) {
    let _ = session.send("</stream:stream>").await;
    let _ = session.io.shutdown().await;
}
