//! Server-to-server federation (RFC 6120 streams in `jabber:server`): TLS is required both ways
//! and the peer is authenticated by its certificate (XEP-0178 SASL EXTERNAL, or a dialback
//! request that the certificate already proves), as Snikket's `s2s_secure_auth` does; XEP-0288
//! bidirectional streams are offered and used.
//!
//! One outgoing link per (local domain, remote domain) pair carries every stanza for that
//! domain; it is opened on the first stanza, closed after [`IDLE`] without traffic, and a
//! stanza that cannot be delivered goes back to its sender as an error.
//! `incoming` accepts the peers' connections, `outgoing` opens ours, `link` runs an
//! authenticated stream, `inbound` applies our delivery rules to what peers send.

pub mod inbound;
pub mod incoming;
mod link;
pub mod outgoing;
pub mod tls;

use crate::state::{lock, State};
use minidom::{Element, Node};
use snikket_runtime::{CancellationToken, TaskTracker};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// `jabber:server`.
pub const NS_SERVER: &str = "jabber:server";
/// `jabber:server:dialback` (XEP-0220).
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The dialback stream feature.
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// XEP-0288 request.
pub const NS_BIDI: &str = "urn:xmpp:bidi";
/// XEP-0288 stream feature.
pub const NS_BIDI_FEATURE: &str = "urn:xmpp:features:bidi";
/// RFC 6120 STARTTLS.
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 SASL.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// `http://etherx.jabber.org/streams`.
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";

/// A link without traffic either way for this long is closed.
pub const IDLE: Duration = Duration::from_secs(600);
/// Stanzas waiting for one remote domain; beyond this they bounce with `resource-constraint`.
const QUEUE: usize = 1024;
/// Prosody's s2s stanza limit.
pub const MAX_STANZA_BYTES: usize = 524_288;

/// (local domain, remote domain).
pub type LinkKey = (String, String);

struct Route {
    id: u64,
    tx: mpsc::Sender<Element>,
}

/// Federation state shared by every connection.
pub struct S2s {
    state: OnceLock<Weak<State>>,
    routes: Mutex<HashMap<LinkKey, Route>>,
    next_id: AtomicU64,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// TLS configurations and peer certificate checks.
    pub tls: tls::Tls,
    resolver: OnceLock<Option<hickory_resolver::TokioResolver>>,
    admin_blocked: Mutex<Option<(Instant, Arc<HashSet<String>>)>>,
}

/// How long the set of domains admins blocked is reused before it is read again (a blocklist
/// change on this server refreshes it at once).
const ADMIN_BLOCKS_TTL: Duration = Duration::from_secs(60);

/// The text of the refusal for a domain an admin blocked (Snikket's `mod_admin_blocklist`).
pub const BLOCKED_DOMAIN: &str = "Communication with this domain is not allowed";

impl S2s {
    /// Federation with TLS from `resolver`'s certificate; links run on `tracker`.
    pub fn new(
        config: &snikket_config::Config,
        resolver: Arc<snikket_runtime::CertResolver>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<S2s> {
        Ok(S2s {
            state: OnceLock::new(),
            routes: Mutex::default(),
            next_id: AtomicU64::new(1),
            tracker,
            shutdown,
            tls: tls::Tls::new(
                config.server.tls_profile,
                resolver,
                config.server.s2s_cafile.as_deref(),
            )?,
            resolver: OnceLock::new(),
            admin_blocked: Mutex::new(None),
        })
    }

    /// Gives the links access to the server state (once it exists).
    pub fn attach(&self, state: &Arc<State>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    fn state(&self) -> Option<Arc<State>> {
        self.state.get().and_then(Weak::upgrade)
    }

    /// The system's DNS resolver, made on first use.
    pub(crate) fn dns(&self) -> Option<&hickory_resolver::TokioResolver> {
        self.resolver
            .get_or_init(|| match hickory_resolver::TokioResolver::builder_tokio() {
                Ok(b) => Some(b.build()),
                Err(e) => {
                    tracing::error!(error = %e, "no DNS resolver: federation cannot find servers");
                    None
                }
            })
            .as_ref()
    }

    /// Forgets the cached admin-blocked domains (a blocklist changed).
    pub fn admin_blocks_changed(&self) {
        *lock(&self.admin_blocked) = None;
    }

    /// Whether an admin of this server has blocked `domain` (XEP-0191 entry of just the
    /// domain): then nothing goes to it or comes from it.
    pub async fn domain_blocked(&self, state: &State, domain: &str) -> bool {
        let cached = lock(&self.admin_blocked)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < ADMIN_BLOCKS_TTL)
            .map(|(_, set)| set.clone());
        let set = match cached {
            Some(set) => set,
            None => {
                let set = Arc::new(admin_blocked_domains(state).await);
                *lock(&self.admin_blocked) = Some((Instant::now(), set.clone()));
                set
            }
        };
        set.contains(domain)
    }

    /// Number of links to other domains (outgoing, and incoming ones used both ways).
    pub fn link_count(&self) -> usize {
        lock(&self.routes).len()
    }

    /// Makes `tx` the link to `key` unless one exists; returns its id when it was taken.
    pub(crate) fn offer_route(&self, key: &LinkKey, tx: mpsc::Sender<Element>) -> Option<u64> {
        let mut routes = lock(&self.routes);
        if routes.contains_key(key) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        routes.insert(key.clone(), Route { id, tx });
        Some(id)
    }

    /// Forgets link `id` of `key` (not a newer one); stanzas still queued in `rx` bounce.
    pub(crate) async fn finish(
        &self,
        state: &State,
        key: &LinkKey,
        id: u64,
        mut rx: mpsc::Receiver<Element>,
        condition: &str,
    ) {
        {
            let mut routes = lock(&self.routes);
            if routes.get(key).is_some_and(|r| r.id == id) {
                routes.remove(key);
            }
        }
        rx.close();
        while let Ok(stanza) = rx.try_recv() {
            bounce(state, &stanza, condition).await;
        }
    }
}

async fn admin_blocked_domains(state: &State) -> HashSet<String> {
    let mut out = HashSet::new();
    let accounts = match state.store.accounts().await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "reading accounts for admin blocklists failed");
            return out;
        }
    };
    for admin in accounts
        .iter()
        .filter(|a| a.role == snikket_store::Role::Admin)
    {
        match state.blocklists.of(&state.store, &admin.username).await {
            Ok(list) => out.extend(
                list.iter()
                    .filter(|j| !j.contains('@') && !j.contains('/'))
                    .map(|d| d.to_ascii_lowercase()),
            ),
            Err(e) => tracing::error!(error = %e, "reading an admin blocklist failed"),
        }
    }
    out
}

/// The domain part of an address.
pub fn domain_of(addr: &str) -> Option<String> {
    jid::Jid::new(addr)
        .ok()
        .map(|j| j.domain().as_str().to_ascii_lowercase())
}

/// The domains peers may address on this server: DOMAIN and `groups.DOMAIN` (file sharing does
/// not federate, as in Snikket).
pub fn is_local_domain(state: &State, domain: &str) -> bool {
    let ascii = &state.config.domain.ascii;
    domain.eq_ignore_ascii_case(ascii)
        || domain
            .strip_prefix("groups.")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(ascii))
}

/// Sends a stanza (with our `from`) to another domain. Undeliverable stanzas come back to the
/// sender as errors, now or when the link gives up.
///
/// (A boxed future with its type written out: a link delivers what peers send, which can answer
/// through here again, and the compiler needs that cycle broken to see it is `Send`.)
pub fn send(
    state: &State,
    stanza: Element,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(send_now(state, stanza))
}

async fn send_now(state: &State, stanza: Element) {
    let Some(key) = link_key(state, &stanza) else {
        return;
    };
    if state.s2s.domain_blocked(state, &key.1).await {
        let reply = crate::xml::error_reply(&stanza, "not-allowed", Some(BLOCKED_DOMAIN));
        if stanza.attr("type") != Some("error") {
            inbound::deliver_error(state, reply).await;
        }
        return;
    }
    if let Some((stanza, condition)) = enqueue(state, key, stanza) {
        bounce(state, &stanza, condition).await;
    }
}

/// Like [`send`] for code that cannot wait (a group chat's fan-out): stanzas keep their order;
/// domains an admin blocked are checked against the cached set; a bounce is made in a task.
pub fn queue(state: &State, stanza: Element) {
    let Some(key) = link_key(state, &stanza) else {
        return;
    };
    let blocked = lock(&state.s2s.admin_blocked)
        .as_ref()
        .is_some_and(|(_, set)| set.contains(&key.1));
    if blocked {
        return;
    }
    if let Some((stanza, condition)) = enqueue(state, key, stanza) {
        if let Some(arc) = state.s2s.state() {
            state.s2s.tracker.spawn(async move {
                bounce(&arc, &stanza, condition).await;
            });
        }
    }
}

/// The link a stanza takes: (our domain it comes from, the domain it goes to).
fn link_key(state: &State, stanza: &Element) -> Option<LinkKey> {
    let (Some(from), Some(to)) = (
        stanza.attr("from").and_then(domain_of),
        stanza.attr("to").and_then(domain_of),
    ) else {
        return None;
    };
    if !is_local_domain(state, &from) || is_local_domain(state, &to) {
        tracing::warn!(%from, %to, "not a stanza for federation; dropped");
        return None;
    }
    Some((from, to))
}

/// Puts a stanza on its link's queue, opening the link if there is none; the stanza comes back
/// with the error condition when it cannot be queued.
fn enqueue(state: &State, key: LinkKey, stanza: Element) -> Option<(Element, &'static str)> {
    let mut routes = lock(&state.s2s.routes);
    let tx = match routes.get(&key) {
        Some(r) => r.tx.clone(),
        None => {
            let Some(arc) = state.s2s.state() else {
                return Some((stanza, "remote-server-not-found"));
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            let id = state.s2s.next_id.fetch_add(1, Ordering::Relaxed);
            routes.insert(key.clone(), Route { id, tx: tx.clone() });
            let token = state.s2s.shutdown.clone();
            state
                .s2s
                .tracker
                .spawn(outgoing::run(arc, key.clone(), id, rx, token));
            tx
        }
    };
    match tx.try_send(stanza) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(s)) => Some((s, "resource-constraint")),
        Err(mpsc::error::TrySendError::Closed(s)) => {
            routes.remove(&key);
            Some((s, "remote-server-not-found"))
        }
    }
}

/// Answers an undeliverable stanza for its local sender, as if the remote side had (errors and
/// IQ results are never answered).
pub async fn bounce(state: &State, stanza: &Element, condition: &str) {
    if stanza.attr("type") == Some("error")
        || (stanza.name() == "iq" && stanza.attr("type") == Some("result"))
    {
        return;
    }
    let reply = crate::xml::error_reply(stanza, condition, None);
    inbound::deliver_error(state, reply).await;
}

/// Moves a stanza and its children that are in namespace `from` into `to` (`jabber:client` ↔
/// `jabber:server`); payloads in other namespaces, such as forwarded messages, are left alone.
pub fn renamespace(mut el: Element, from: &str, to: &str) -> Element {
    if el.ns() != from {
        return el;
    }
    let mut out = Element::builder(el.name(), to).build();
    *out.attrs_mut() = el.attrs().clone();
    for node in el.take_nodes() {
        match node {
            Node::Element(c) => {
                out.append_child(renamespace(c, from, to));
            }
            Node::Text(t) => out.append_text(t),
        }
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Our `<stream:stream>` header for a server stream, declaring the dialback prefix.
pub fn stream_header(from: &str, to: Option<&str>, id: Option<&str>) -> Vec<u8> {
    let mut h = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:stream='{NS_STREAM}' \
         xmlns:db='{NS_DIALBACK}' from='{}'",
        escape(from)
    );
    if let Some(to) = to {
        h.push_str(&format!(" to='{}'", escape(to)));
    }
    if let Some(id) = id {
        h.push_str(&format!(" id='{}'", escape(id)));
    }
    h.push_str(" version='1.0'>");
    h.into_bytes()
}

/// Serialises a stanza for a server stream (`jabber:server`).
pub fn to_wire(stanza: Element) -> Option<Vec<u8>> {
    let el = renamespace(stanza, crate::xml::NS_CLIENT, NS_SERVER);
    snikket_xmpp::framing::writer::element_to_bytes(&el).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamespace_moves_the_stanza_and_its_own_children_only() {
        let m: Element = "<message xmlns='jabber:client' to='a@b'><body>hi</body>\
            <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded></message>"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let s = renamespace(m, crate::xml::NS_CLIENT, NS_SERVER);
        assert_eq!(s.ns(), NS_SERVER);
        assert_eq!(s.attr("to"), Some("a@b"));
        assert!(s.has_child("body", NS_SERVER));
        let fwd = s.get_child("forwarded", "urn:xmpp:forward:0");
        assert!(fwd.is_some_and(|f| f.has_child("message", crate::xml::NS_CLIENT)));
        let back = renamespace(s, NS_SERVER, crate::xml::NS_CLIENT);
        assert_eq!(
            back.get_child("body", crate::xml::NS_CLIENT)
                .map(|b| b.text()),
            Some("hi".into())
        );
    }

    #[test]
    fn header_escapes_peer_supplied_names() {
        let h =
            String::from_utf8(stream_header("a.test", Some("x'><evil"), None)).unwrap_or_default();
        assert!(h.contains("to='x&apos;&gt;&lt;evil'"));
        assert!(h.contains("xmlns:db='jabber:server:dialback'"));
    }
}
