//! Our connections to other servers: find the server (`SNIKKET_TWEAK_S2S_ROUTES`, then DNS SRV
//! `_xmpp-server._tcp`, then the domain on port 5269), STARTTLS with the peer's certificate
//! verified for its domain, then SASL EXTERNAL with ours (XEP-0178), or dialback where the peer
//! only offers that (it accepts on the strength of our certificate). XEP-0288 bidi is asked for
//! when offered, so the peer can answer over the same stream.

use super::{
    link, stream_header, LinkKey, NS_BIDI, NS_BIDI_FEATURE, NS_DIALBACK, NS_DIALBACK_FEATURE,
    NS_SASL, NS_SERVER, NS_STREAM, NS_TLS,
};
use crate::c2s::conn::{Conn, ConnError};
use crate::state::State;
use crate::xml::el;
use base64::Engine;
use minidom::Element;
use snikket_runtime::CancellationToken;
use snikket_xmpp::framing::{Event, Limits};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Time allowed for one TCP connect.
const CONNECT: Duration = Duration::from_secs(10);
/// Time allowed from the first connect to an authenticated stream.
const NEGOTIATE: Duration = Duration::from_secs(45);
/// Idle time allowed between negotiation steps.
const STEP: Duration = Duration::from_secs(20);

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Why a connection to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No address answered.
    #[error("no server reachable for {0}")]
    Unreachable(String),
    /// The peer does not offer TLS.
    #[error("the server does not offer TLS")]
    NoTls,
    /// The TLS handshake failed (typically: an untrusted certificate).
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// Neither SASL EXTERNAL nor dialback succeeded.
    #[error("the server did not accept our certificate: {0}")]
    NotAuthenticated(String),
    /// The stream broke.
    #[error("stream: {0}")]
    Stream(String),
}

impl From<ConnError> for LinkError {
    fn from(e: ConnError) -> Self {
        LinkError::Stream(e.to_string())
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Stream(e.to_string())
    }
}

/// A fresh random identifier (stream ids, dialback keys).
pub fn random_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The link task for `key`: connects, then carries the queue until the link ends; stanzas it
/// could not send go back to their senders.
pub(super) async fn run(
    state: Arc<State>,
    key: LinkKey,
    id: u64,
    mut rx: mpsc::Receiver<Element>,
    shutdown: CancellationToken,
) {
    let (local, remote) = (&key.0, &key.1);
    let connected = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = tokio::time::timeout(NEGOTIATE, connect(&state, local, remote)) => Some(r),
    };
    let condition = match connected {
        None => "remote-server-timeout",
        Some(Ok(Ok((mut conn, bidi)))) => {
            tracing::info!(%local, %remote, bidi, "outgoing server link authenticated");
            let peers: HashSet<String> = if bidi {
                [remote.clone()].into_iter().collect()
            } else {
                HashSet::new()
            };
            let end = link::run(&state, &mut conn, &peers, Some(&mut rx), &shutdown).await;
            tracing::info!(%local, %remote, ?end, "outgoing server link closed");
            match end {
                link::End::Closed => "remote-server-not-found",
                link::End::Failed => "remote-server-timeout",
            }
        }
        Some(Ok(Err(e))) => {
            tracing::warn!(%local, %remote, error = %e, "cannot federate with this domain");
            match e {
                LinkError::Unreachable(_) => "remote-server-not-found",
                _ => "remote-server-timeout",
            }
        }
        Some(Err(_)) => {
            tracing::warn!(%local, %remote, "connecting to the server timed out");
            "remote-server-timeout"
        }
    };
    state.s2s.finish(&state, &key, id, rx, condition).await;
}

/// Where `remote`'s server listens, in the order to try.
async fn targets(state: &State, remote: &str) -> Vec<(String, u16)> {
    if let Some((_, addr)) = state
        .config
        .server
        .s2s_routes
        .iter()
        .find(|(d, _)| d == remote)
    {
        if let Some((host, port)) = addr.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(port) = port.parse() {
                return vec![(host.to_string(), port)];
            }
        }
    }
    let mut out = Vec::new();
    if remote.ends_with(".invalid") || remote == "invalid" {
        // RFC 6761 §6.4: never resolves; no need to ask.
        return out;
    }
    if let Some(dns) = state.s2s.dns() {
        match dns.srv_lookup(format!("_xmpp-server._tcp.{remote}.")).await {
            Ok(srv) => {
                let mut records: Vec<_> = srv.iter().cloned().collect();
                records.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
                for r in records {
                    let target = r.target().to_ascii();
                    let target = target.trim_end_matches('.');
                    if target.is_empty() {
                        // "." means the domain offers no service (RFC 2782).
                        return Vec::new();
                    }
                    out.push((target.to_string(), r.port()));
                }
            }
            Err(e) => tracing::debug!(%remote, error = %e, "no SRV record"),
        }
    }
    if out.is_empty() {
        out.push((remote.to_string(), 5269));
    }
    out
}

async fn dial(state: &State, remote: &str) -> Result<TcpStream, LinkError> {
    let targets = targets(state, remote).await;
    if targets.is_empty() {
        return Err(LinkError::Unreachable(remote.to_string()));
    }
    for (host, port) in targets {
        let addrs: Vec<std::net::SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![(ip, port).into()],
            Err(_) => match state.s2s.dns() {
                Some(dns) => match dns.lookup_ip(format!("{host}.")).await {
                    Ok(ips) => ips.iter().map(|ip| (ip, port).into()).collect(),
                    Err(e) => {
                        tracing::debug!(%host, error = %e, "address lookup failed");
                        continue;
                    }
                },
                None => continue,
            },
        };
        for addr in addrs {
            if !state.config.ipv6 && addr.is_ipv6() {
                continue;
            }
            match tokio::time::timeout(CONNECT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "connect failed"),
                Err(_) => tracing::debug!(%addr, "connect timed out"),
            }
        }
    }
    Err(LinkError::Unreachable(remote.to_string()))
}

/// Sends our header and reads the peer's header and features.
async fn open<S: AsyncBufRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    local: &str,
    remote: &str,
) -> Result<Element, LinkError> {
    conn.send(&stream_header(local, Some(remote), None)).await?;
    match conn.next_within(STEP).await? {
        Event::StreamOpen(_) => {}
        _ => return Err(LinkError::Stream("no stream header".into())),
    }
    match conn.next_within(STEP).await? {
        Event::Stanza { element, .. } if element.is("features", NS_STREAM) => Ok(element),
        Event::Stanza { element, .. } if element.is("error", NS_STREAM) => Err(LinkError::Stream(
            format!("stream error {}", stream_error_text(&element)),
        )),
        _ => Err(LinkError::Stream("no stream features".into())),
    }
}

fn stream_error_text(e: &Element) -> String {
    e.children()
        .map(|c| {
            if c.name() == "text" {
                format!("({})", c.text())
            } else {
                c.name().to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Connects and authenticates; returns the stream and whether it is bidirectional.
async fn connect(state: &State, local: &str, remote: &str) -> Result<(Conn<Tls>, bool), LinkError> {
    let socket = dial(state, remote).await?;
    let mut conn = Conn::plain(socket, Limits::pre_auth(), NS_SERVER);
    let features = open(&mut conn, local, remote).await?;
    if features.get_child("starttls", NS_TLS).is_none() {
        conn.close().await;
        return Err(LinkError::NoTls);
    }
    conn.send_el(&el("starttls", NS_TLS, &[], vec![])).await?;
    match conn.next_within(STEP).await? {
        Event::Stanza { element, .. } if element.is("proceed", NS_TLS) => {}
        _ => return Err(LinkError::NoTls),
    }
    let name = rustls::pki_types::ServerName::try_from(remote.to_string())
        .map_err(|e| LinkError::Stream(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&state.s2s.tls.client));
    let tls = connector
        .connect(name, conn.into_socket())
        .await
        .map_err(LinkError::Tls)?;
    let mut conn = Conn::with_namespace(tls, super::incoming::limits(), NS_SERVER);
    let features = open(&mut conn, local, remote).await?;
    let bidi = features.get_child("bidi", NS_BIDI_FEATURE).is_some();
    if bidi {
        conn.send_el(&el("bidi", NS_BIDI, &[], vec![])).await?;
    }
    let external = features.get_child("mechanisms", NS_SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.name() == "mechanism" && c.text() == "EXTERNAL")
    });
    if external {
        let mut auth = el("auth", NS_SASL, &[("mechanism", "EXTERNAL")], vec![]);
        auth.append_text(base64::engine::general_purpose::STANDARD.encode(local));
        conn.send_el(&auth).await?;
        match conn.next_within(STEP).await? {
            Event::Stanza { element, .. } if element.is("success", NS_SASL) => {}
            Event::Stanza { element, .. } => {
                return Err(LinkError::NotAuthenticated(format!(
                    "SASL EXTERNAL: {}",
                    stream_error_text(&element)
                )))
            }
            _ => return Err(LinkError::Stream("stream ended during SASL".into())),
        }
        conn.restart()
            .map_err(|e| LinkError::Stream(e.to_string()))?;
        open(&mut conn, local, remote).await?;
        return Ok((conn, bidi));
    }
    if features
        .get_child("dialback", NS_DIALBACK_FEATURE)
        .is_some()
    {
        // The key is never checked by us: the peer accepts because our certificate is valid.
        let mut result = el(
            "result",
            NS_DIALBACK,
            &[("from", local), ("to", remote)],
            vec![],
        );
        result.append_text(random_id());
        conn.send_el(&result).await?;
        loop {
            match conn.next_within(STEP).await? {
                Event::Stanza { element, .. } if element.is("result", NS_DIALBACK) => {
                    return match element.attr("type") {
                        Some("valid") => Ok((conn, bidi)),
                        other => Err(LinkError::NotAuthenticated(format!(
                            "dialback {}",
                            other.unwrap_or("without a type")
                        ))),
                    };
                }
                Event::Stanza { element, .. } if element.is("error", NS_STREAM) => {
                    return Err(LinkError::NotAuthenticated(stream_error_text(&element)))
                }
                Event::Stanza { .. } => continue,
                _ => return Err(LinkError::Stream("stream ended during dialback".into())),
            }
        }
    }
    conn.close().await;
    Err(LinkError::NotAuthenticated(
        "neither SASL EXTERNAL nor dialback offered".into(),
    ))
}
