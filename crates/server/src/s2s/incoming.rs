//! Peers connecting to us on the s2s port: STARTTLS (required), then authentication by
//! certificate — SASL EXTERNAL (XEP-0178), or a dialback request (XEP-0220) that is granted only
//! when the certificate already proves the domain, the way Prosody treats dialback with
//! `s2s_secure_auth`. Results the peer was never asked for (`<db:result type='valid'/>`) and
//! dialback verification requests authenticate nothing.

use super::{
    is_local_domain, link, stream_header, NS_BIDI, NS_BIDI_FEATURE, NS_DIALBACK,
    NS_DIALBACK_FEATURE, NS_SASL, NS_SERVER, NS_STREAM, NS_TLS,
};
use crate::c2s::conn::Conn;
use crate::c2s::negotiate::report;
use crate::state::State;
use crate::xml::{el, text_el};
use base64::Engine;
use minidom::Element;
use snikket_runtime::{CancellationToken, TaskTracker};
use snikket_xmpp::framing::{Event, Limits};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Idle time allowed between steps before authentication.
const STEP: Duration = Duration::from_secs(30);
/// Time from accept to an authenticated stream.
const DEADLINE: Duration = Duration::from_secs(60);
/// Connections accepted from one address at once.
const MAX_PER_IP: usize = 16;

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// Limits once the stream is encrypted (Prosody's 512 KiB s2s stanza size).
pub(super) fn limits() -> Limits {
    Limits {
        max_stanza_bytes: super::MAX_STANZA_BYTES,
        max_buffered_bytes: 2 * super::MAX_STANZA_BYTES,
        ..Limits::default()
    }
}

/// Binds the s2s port on every configured interface.
pub async fn start(
    state: Arc<State>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = &state.config;
    let mut bound = 0;
    for ip in &cfg.bind_interfaces {
        let addr = SocketAddr::new(*ip, cfg.server.s2s_port);
        let listener = match crate::c2s::listener::bind(addr) {
            Ok(l) => l,
            Err(e) if ip.is_ipv6() => {
                tracing::warn!(%addr, error = %e, "cannot listen on IPv6 address");
                continue;
            }
            Err(e) => {
                // Like Prosody: chat on this server keeps working; only federation is missing.
                tracing::error!(%addr, error = %e, "cannot listen for other servers; federation only works outwards");
                continue;
            }
        };
        tracing::info!(%addr, "s2s listening");
        bound += 1;
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&state),
            tracker.clone(),
            shutdown.clone(),
        ));
    }
    if bound == 0 {
        tracing::error!(
            port = cfg.server.s2s_port,
            "no s2s listener: other servers cannot reach this one"
        );
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let limiter = Arc::new(crate::c2s::listener::IpLimiter::default());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "s2s accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limiter.acquire(peer.ip(), MAX_PER_IP) else {
            tracing::warn!(%peer, "too many server connections from this address; refusing");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let st = Arc::clone(&state);
        let token = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            handle(socket, peer, st, token).await;
        });
    }
}

/// What authentication established.
struct Authenticated {
    conn: Conn<Tls>,
    /// The stream's `to`: which of our domains the peer talks to.
    local: String,
    /// Domains the peer proved.
    peers: HashSet<String>,
    /// The peer asked to use this stream both ways (XEP-0288).
    bidi: bool,
}

async fn handle(
    socket: TcpStream,
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let negotiated = tokio::time::timeout(DEADLINE, negotiate(socket, &state)).await;
    let Ok(Some(mut auth)) = negotiated else {
        tracing::debug!(peer = %addr, "s2s negotiation failed");
        return;
    };
    for d in &auth.peers {
        if state.s2s.domain_blocked(&state, d).await {
            tracing::info!(peer = %addr, domain = %d, "refusing a domain an admin blocked");
            auth.conn
                .fail("policy-violation", Some(super::BLOCKED_DOMAIN))
                .await;
            return;
        }
    }
    tracing::info!(peer = %addr, domains = ?auth.peers, bidi = auth.bidi, "incoming server link authenticated");
    // With bidi, our stanzas for the peer's domain use this stream too, unless a link exists.
    let mut routes = Vec::new();
    let (tx, mut rx) = mpsc::channel(super::QUEUE);
    if auth.bidi {
        for peer in &auth.peers {
            let key = (auth.local.clone(), peer.clone());
            if let Some(id) = state.s2s.offer_route(&key, tx.clone()) {
                routes.push((key, id));
            }
        }
    }
    drop(tx);
    let queue = (!routes.is_empty()).then_some(&mut rx);
    let end = link::run(&state, &mut auth.conn, &auth.peers, queue, &shutdown).await;
    let condition = match end {
        link::End::Closed => "remote-server-not-found",
        link::End::Failed => "remote-server-timeout",
    };
    // Every route shares one queue: hand it over once, after forgetting the others.
    let mut routes = routes.into_iter();
    if let Some((key, id)) = routes.next() {
        for (other, other_id) in routes {
            let (_, closed) = mpsc::channel(1);
            state
                .s2s
                .finish(&state, &other, other_id, closed, condition)
                .await;
        }
        state.s2s.finish(&state, &key, id, rx, condition).await;
    }
    tracing::info!(peer = %addr, "incoming server link closed");
}

/// Reads the peer's header and answers with ours and the features `offer` makes for the
/// domain it claims; returns the domain it addressed and the one it claims.
async fn open<S>(
    conn: &mut Conn<S>,
    state: &State,
    offer: impl FnOnce(Option<&str>) -> Element,
) -> Option<(String, Option<String>)>
where
    S: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let header = match conn.next_within(STEP).await {
        Ok(Event::StreamOpen(h)) => h,
        Ok(_) => {
            conn.fail("not-well-formed", None).await;
            return None;
        }
        Err(e) => {
            report(conn, e).await;
            return None;
        }
    };
    let to = header.to.as_deref().map(str::to_ascii_lowercase);
    let from = header.from.as_deref().map(str::to_ascii_lowercase);
    let local = to
        .clone()
        .unwrap_or_else(|| state.config.domain.ascii.clone());
    let id = super::outgoing::random_id();
    let ours = if is_local_domain(state, &local) {
        local.as_str()
    } else {
        state.config.domain.ascii.as_str()
    };
    let reply = stream_header(ours, from.as_deref(), Some(&id));
    conn.send(&reply).await.ok()?;
    if !is_local_domain(state, &local) {
        conn.fail(
            "host-unknown",
            Some("This server does not serve that domain"),
        )
        .await;
        return None;
    }
    conn.send_el(&offer(from.as_deref())).await.ok()?;
    Some((local, from))
}

fn features(children: Vec<Element>) -> Element {
    el("features", NS_STREAM, &[], children)
}

async fn negotiate(socket: TcpStream, state: &Arc<State>) -> Option<Authenticated> {
    // Plain stream: only STARTTLS.
    let mut conn = Conn::plain(socket, Limits::pre_auth(), NS_SERVER);
    let offer = features(vec![el(
        "starttls",
        NS_TLS,
        &[],
        vec![el("required", NS_TLS, &[], vec![])],
    )]);
    open(&mut conn, state, |_| offer).await?;
    match conn.next_within(STEP).await {
        Ok(Event::Stanza { element, .. }) if element.is("starttls", NS_TLS) => {
            if !state.resolver.has_certificate() {
                let _ = conn.send_el(&el("failure", NS_TLS, &[], vec![])).await;
                conn.close().await;
                return None;
            }
            conn.send_el(&el("proceed", NS_TLS, &[], vec![]))
                .await
                .ok()?;
        }
        Ok(Event::StreamClose) => {
            conn.close().await;
            return None;
        }
        Ok(_) => {
            conn.fail("policy-violation", Some("Encryption is required"))
                .await;
            return None;
        }
        Err(e) => {
            report(&mut conn, e).await;
            return None;
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&state.s2s.tls.server));
    let tls = match acceptor.accept(conn.into_socket()).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "s2s tls handshake failed");
            return None;
        }
    };
    let chain: Vec<_> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default();
    let proves = |domain: &str| state.s2s.tls.proves(&chain, domain);
    let mut conn = Conn::with_namespace(tls, limits(), NS_SERVER);
    let mut bidi = false;
    // EXTERNAL is offered only when the certificate proves the claimed domain (XEP-0178 §3).
    let (mut local, claimed) = open(&mut conn, state, |from| {
        let mut offer = Vec::new();
        if from.is_some_and(proves) {
            offer.push(el(
                "mechanisms",
                NS_SASL,
                &[],
                vec![text_el("mechanism", NS_SASL, "EXTERNAL")],
            ));
        }
        offer.push(el(
            "dialback",
            NS_DIALBACK_FEATURE,
            &[],
            vec![el("errors", NS_DIALBACK_FEATURE, &[], vec![])],
        ));
        offer.push(el("bidi", NS_BIDI_FEATURE, &[], vec![]));
        features(offer)
    })
    .await?;
    let mut peers = HashSet::new();
    loop {
        let element = match conn.next_within(STEP).await {
            Ok(Event::Stanza { element, .. }) => element,
            Ok(Event::StreamClose) => {
                conn.close().await;
                return None;
            }
            Ok(Event::StreamOpen(_)) => {
                conn.fail("not-well-formed", None).await;
                return None;
            }
            Err(e) => {
                report(&mut conn, e).await;
                return None;
            }
        };
        if element.is("bidi", NS_BIDI) {
            bidi = true;
        } else if element.is("auth", NS_SASL) {
            let authzid = external_authzid(&element);
            let domain = match (&authzid, &claimed) {
                (Some(Some(a)), _) => Some(a.clone()),
                (Some(None), Some(c)) => Some(c.clone()),
                _ => None,
            };
            let ok = element.attr("mechanism") == Some("EXTERNAL")
                && domain.as_deref().is_some_and(|d| {
                    claimed.as_deref() == Some(d) && !is_local_domain(state, d) && proves(d)
                });
            let Some(domain) = domain.filter(|_| ok) else {
                let failure = el(
                    "failure",
                    NS_SASL,
                    &[],
                    vec![el("not-authorized", NS_SASL, &[], vec![])],
                );
                let _ = conn.send_el(&failure).await;
                tracing::info!(claimed = ?claimed, "s2s SASL EXTERNAL refused");
                continue;
            };
            conn.send_el(&el("success", NS_SASL, &[], vec![]))
                .await
                .ok()?;
            if conn.restart().is_err() {
                return None;
            }
            // The stream after SASL: offer bidi again if it was not requested yet.
            let again = if bidi {
                features(vec![])
            } else {
                features(vec![el("bidi", NS_BIDI_FEATURE, &[], vec![])])
            };
            let (l, _) = open(&mut conn, state, |_| again).await?;
            local = l;
            peers.insert(domain);
            break;
        } else if element.is("result", NS_DIALBACK) {
            if element.attr("type").is_some() {
                // A result we never asked for: it proves nothing (CVE-2012-3525 class).
                tracing::info!(claimed = ?element.attr("from"), "unsolicited dialback result ignored");
                continue;
            }
            let from = element.attr("from").map(str::to_ascii_lowercase);
            let to = element.attr("to").map(str::to_ascii_lowercase);
            let valid = match (&from, &to) {
                (Some(f), Some(t)) => {
                    is_local_domain(state, t) && !is_local_domain(state, f) && proves(f)
                }
                _ => false,
            };
            let mut reply = el(
                "result",
                NS_DIALBACK,
                &[
                    ("from", to.as_deref().unwrap_or(&local)),
                    ("to", from.as_deref().unwrap_or("")),
                    ("type", if valid { "valid" } else { "invalid" }),
                ],
                vec![],
            );
            if !valid {
                crate::xml::set_attr(&mut reply, "type", "error");
                reply.append_child(el(
                    "error",
                    NS_SERVER,
                    &[("type", "cancel")],
                    vec![
                        el("not-authorized", crate::xml::NS_STANZAS, &[], vec![]),
                        text_el(
                            "text",
                            crate::xml::NS_STANZAS,
                            "A certificate valid for the domain is required",
                        ),
                    ],
                ));
            }
            conn.send_el(&reply).await.ok()?;
            if let (true, Some(f)) = (valid, from) {
                peers.insert(f);
                break;
            }
            tracing::info!(claimed = ?element.attr("from"), "dialback without a valid certificate refused");
        } else if element.is("verify", NS_DIALBACK) {
            // We never hand out keys for others to verify.
            let reply = el(
                "verify",
                NS_DIALBACK,
                &[
                    ("from", element.attr("to").unwrap_or("")),
                    ("to", element.attr("from").unwrap_or("")),
                    ("id", element.attr("id").unwrap_or("")),
                    ("type", "invalid"),
                ],
                vec![],
            );
            conn.send_el(&reply).await.ok()?;
        } else if matches!(element.name(), "message" | "presence" | "iq") {
            conn.fail("not-authorized", Some("Authenticate first"))
                .await;
            return None;
        } else {
            conn.fail("unsupported-stanza-type", None).await;
            return None;
        }
    }
    Some(Authenticated {
        conn,
        local,
        peers,
        bidi,
    })
}

/// The authorization identity of a SASL EXTERNAL `<auth/>`: `Some(None)` for none (empty or
/// `=`), `None` when it is not valid base64 UTF-8.
fn external_authzid(auth: &Element) -> Option<Option<String>> {
    let text = auth.text();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Some(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    Some(Some(s.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authzid_forms() {
        let auth = |t: &str| {
            let mut e = el("auth", NS_SASL, &[("mechanism", "EXTERNAL")], vec![]);
            e.append_text(t);
            e
        };
        assert_eq!(external_authzid(&auth("")), Some(None));
        assert_eq!(external_authzid(&auth("=")), Some(None));
        assert_eq!(
            external_authzid(&auth("Yi50ZXN0")),
            Some(Some("b.test".into()))
        );
        assert_eq!(external_authzid(&auth("!!")), None);
    }
}
