//! Stream negotiation: STARTTLS or direct TLS, SASL SCRAM or SASL2 (`c2s::sasl2`, with Bind 2 and
//! FAST) or invite registration, resource binding.
//!
//! Everything before authentication runs under a small stanza limit and a deadline, so an idle or
//! slow unauthenticated connection costs little and goes away.

use crate::c2s::conn::{Conn, ConnError};
use crate::c2s::listener::IpSlot;
use crate::c2s::register::{self, Registration};
use crate::c2s::sasl2;
use crate::c2s::session;
use crate::state::State;
use crate::xml::{self, el, NS_CLIENT};
use minidom::Element;
use snikket_runtime::CancellationToken;
use snikket_store::AccountState;
use snikket_xmpp::framing::{writer, Event, Limits};
use snikket_xmpp::scram::{
    self, ChannelBinding, ChannelBindingType, Mechanism, ScramHash, ScramServer, StoredCredentials,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub(super) const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

/// Time an unauthenticated peer may stay silent.
const PRE_AUTH_IDLE: Duration = Duration::from_secs(30);
/// Time from accept to a bound session.
const PRE_AUTH_DEADLINE: Duration = Duration::from_secs(120);
/// Failed SASL attempts on one connection before it is closed.
const MAX_AUTH_FAILURES: u32 = 3;

fn pre_auth_limits() -> Limits {
    Limits::pre_auth()
}

/// The bytes limit a session gets after authentication (XEP-0478 advertises it).
pub fn session_limits() -> Limits {
    Limits::default()
}

fn stream_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs one client connection from accept to close; `slot` is its place under the per-address
/// connection limit, held until the connection ends.
///
/// This future is most of an idle session's memory, so it is built with as few layers as
/// possible: not an `async fn` (whose arguments would stay in its future beside the inner one's),
/// and the inputs boxed, because a future keeps room for what it captured for as long as it
/// lives, and a session would otherwise carry the socket and address it handed on at the start.
pub fn handle(
    socket: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    state: Arc<State>,
    shutdown: CancellationToken,
    slot: IpSlot,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let span = tracing::debug_span!("c2s", %peer, direct_tls);
    let start = Box::new((socket, peer, state, shutdown, slot));
    async move {
        let (socket, peer, state, shutdown, _slot) = session::unbox(start);
        // Boxed: the negotiation's state (TLS handshake, SASL, registration) is freed once the
        // session runs, instead of sizing every idle session's task; so is its result, which
        // this future would otherwise keep room for beside the session's.
        let negotiated = tokio::time::timeout(
            PRE_AUTH_DEADLINE,
            Box::pin(negotiate(socket, peer, direct_tls, &state)),
        )
        .await;
        // What a connection held is freed when it ends; after many, it goes back to the
        // system (the session notes its own end).
        match negotiated {
            Ok(Some(bound)) => session::run(bound, state, shutdown).await,
            Ok(None) => state.trimmer.note(),
            Err(_) => {
                tracing::debug!("negotiation deadline passed");
                state.trimmer.note();
            }
        }
    }
    .instrument(span)
}

/// A client's TLS stream.
pub(crate) type Tls = crate::c2s::tls::TlsConn<TcpStream>;

/// A negotiated, authenticated, bound stream.
pub struct Bound {
    /// Stream management enabled inline (Bind 2), to start the session with.
    pub sm: Option<crate::c2s::sm::InlineEnable>,
    /// The connection.
    pub conn: Conn<Tls>,
    /// Local part of the account.
    pub username: String,
    /// The bound resource.
    pub resource: String,
    /// The session's channel (registered in the router).
    pub rx: crate::inbox::Inbox<crate::router::Outbound>,
    /// Handle for unregistering.
    pub session_id: u64,
}

async fn negotiate(
    socket: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    state: &Arc<State>,
) -> Option<Box<Bound>> {
    let tls = if direct_tls {
        accept_tls(socket, state).await?
    } else {
        starttls(socket, state).await?
    };
    secure(tls, peer, state).await.map(Box::new)
}

async fn accept_tls(socket: TcpStream, state: &State) -> Option<Tls> {
    if !state.resolver.has_certificate() {
        tracing::warn!("no certificate yet; refusing TLS");
        return None;
    }
    let accept = Tls::accept(socket, Arc::clone(&state.tls));
    match tokio::time::timeout(Duration::from_secs(20), accept).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "tls handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Reads the peer's stream header and answers with ours; checks the addressed domain.
pub(super) async fn open_stream<S: AsyncBufRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    state: &State,
    features: Element,
) -> Option<()> {
    let header = match conn.next_within(PRE_AUTH_IDLE).await {
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
    let domain = &state.config.domain;
    let lang = header.lang.clone().unwrap_or_else(|| "en".to_string());
    let id = stream_id();
    let response = writer::stream_header(&writer::ResponseHeader {
        content_ns: NS_CLIENT,
        from: &domain.ascii,
        to: None,
        id: &id,
        lang: &lang,
    });
    let to = header.to.as_deref().map(str::to_lowercase);
    if to.as_deref() != Some(domain.ascii.as_str())
        && to.as_deref() != Some(domain.unicode.as_str())
    {
        if conn.send(&response).await.is_ok() {
            conn.fail(
                "host-unknown",
                Some("This server does not serve that domain"),
            )
            .await;
        }
        return None;
    }
    // Header and features in one write: one TLS record and one segment instead of two.
    let mut out = response;
    if let Err(e) = features.write_to(&mut out) {
        tracing::error!(error = %e, "stream features could not be serialized");
        return None;
    }
    conn.send(&out).await.ok()
}

/// Answers a failed read with the stream error it calls for (none when the socket is gone).
pub(crate) async fn report<S: AsyncBufRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, e: ConnError) {
    match e {
        ConnError::Stream(s) => {
            tracing::debug!(condition = s.condition(), "stream error");
            conn.fail(s.condition(), None).await;
        }
        ConnError::Timeout => conn.fail("connection-timeout", None).await,
        ConnError::Io(_) | ConnError::Closed => {}
    }
}

pub(super) fn features(children: Vec<Element>) -> Element {
    el("features", snikket_xmpp::framing::NS_STREAM, &[], children)
}

async fn starttls(socket: TcpStream, state: &State) -> Option<Tls> {
    let mut conn = Conn::plain(socket, pre_auth_limits(), snikket_xmpp::framing::NS_CLIENT);
    let f = features(vec![el(
        "starttls",
        NS_TLS,
        &[],
        vec![el("required", NS_TLS, &[], vec![])],
    )]);
    open_stream(&mut conn, state, f).await?;
    match conn.next_within(PRE_AUTH_IDLE).await {
        Ok(Event::Stanza { element, .. }) if element.is("starttls", NS_TLS) => {
            if !state.resolver.has_certificate() {
                let _ = conn.send_el(&el("failure", NS_TLS, &[], vec![])).await;
                conn.close().await;
                return None;
            }
            conn.send_el(&el("proceed", NS_TLS, &[], vec![]))
                .await
                .ok()?;
            accept_tls(conn.into_socket(), state).await
        }
        Ok(Event::StreamClose) => {
            conn.close().await;
            None
        }
        Ok(_) => {
            conn.fail("policy-violation", Some("Encryption is required"))
                .await;
            None
        }
        Err(e) => {
            report(&mut conn, e).await;
            None
        }
    }
}

fn channel_bindings(tls: &Tls, state: &State) -> Vec<ChannelBinding> {
    let mut out = Vec::new();
    // Only TLS 1.3 connections have it (RFC 9266 §3).
    if let Some(data) = tls.exporter_binding() {
        out.push(ChannelBinding {
            kind: ChannelBindingType::TlsExporter,
            data: data.to_vec(),
        });
    }
    if let Some(ck) = state.resolver.current() {
        if let Some(cb) = ck
            .cert
            .first()
            .and_then(|leaf| ChannelBinding::tls_server_end_point(leaf.as_ref()))
        {
            out.push(cb);
        }
    }
    out
}

fn sasl_features(cb: &[ChannelBinding], state: &State) -> Vec<Element> {
    let mut out = Vec::new();
    if !state.config.server.require_sasl2 {
        let mechs = scram::mechanisms(!cb.is_empty())
            .into_iter()
            .map(|m| xml::text_el("mechanism", NS_SASL, m))
            .collect();
        out.push(el("mechanisms", NS_SASL, &[], mechs));
    }
    out.push(sasl2::feature(cb));
    if !cb.is_empty() {
        let types = cb
            .iter()
            .map(|c| {
                el(
                    "channel-binding",
                    "urn:xmpp:sasl-cb:0",
                    &[("type", c.kind.name())],
                    vec![],
                )
            })
            .collect();
        out.push(el("sasl-channel-binding", "urn:xmpp:sasl-cb:0", &[], types));
    }
    out.push(el(
        "register",
        "http://jabber.org/features/iq-register",
        &[],
        vec![],
    ));
    out.push(el("register", "urn:xmpp:invite", &[], vec![]));
    out.push(el("register", "urn:xmpp:ibr-token:0", &[], vec![]));
    out.push(limits_feature());
    out
}

pub(super) fn limits_feature() -> Element {
    el(
        "limits",
        "urn:xmpp:stream-limits:0",
        &[],
        vec![xml::text_el(
            "max-bytes",
            "urn:xmpp:stream-limits:0",
            &session_limits().max_stanza_bytes.to_string(),
        )],
    )
}

async fn secure(tls: Tls, peer: SocketAddr, state: &Arc<State>) -> Option<Bound> {
    let cb = channel_bindings(&tls, state);
    let mut conn = Conn::new(tls, pre_auth_limits());
    open_stream(&mut conn, state, features(sasl_features(&cb, state))).await?;
    let mut registration = Registration::default();
    let mut failures = 0;
    let username = loop {
        let element = match conn.next_within(PRE_AUTH_IDLE).await {
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
        let outcome = if element.is("auth", NS_SASL) {
            sasl(&mut conn, &element, &cb, state, peer).await
        } else if element.is("authenticate", sasl2::NS_SASL2) {
            match sasl2::authenticate(&mut conn, &element, &cb, state, peer).await {
                Ok(auth) => return sasl2::finish(conn, auth, &element, &cb, state).await,
                Err(o) => o,
            }
        } else if element.is("iq", NS_CLIENT) {
            let reply = register::handle_pre_auth(&element, &mut registration, state).await;
            conn.send_el(&reply).await.ok()?;
            continue;
        } else {
            conn.fail("not-authorized", None).await;
            return None;
        };
        match outcome {
            SaslOutcome::Success(u) => break u,
            SaslOutcome::Failed => {
                failures += 1;
                if failures >= MAX_AUTH_FAILURES {
                    conn.fail(
                        "policy-violation",
                        Some("Too many failed authentication attempts"),
                    )
                    .await;
                    return None;
                }
            }
            SaslOutcome::Closed => return None,
        }
    };
    tracing::debug!(user = %username, "authenticated");
    bind(conn, username, state).await
}

pub(super) enum SaslOutcome {
    Success(String),
    Failed,
    Closed,
}

/// Which SASL profile an exchange speaks: RFC 6120's or SASL2's (XEP-0388). Both carry the same
/// base64 payloads and RFC 6120 conditions; they differ in the element namespaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Profile {
    Legacy,
    Sasl2,
}

impl Profile {
    fn ns(self) -> &'static str {
        match self {
            Profile::Legacy => NS_SASL,
            Profile::Sasl2 => sasl2::NS_SASL2,
        }
    }

    /// `<failure>` with an RFC 6120 condition (always in the SASL namespace) and a text.
    pub(super) fn failure(self, condition: &str, text: Option<&str>) -> Element {
        let mut f = el(
            "failure",
            self.ns(),
            &[],
            vec![el(condition, NS_SASL, &[], vec![])],
        );
        if let Some(t) = text {
            f.append_child(xml::text_el("text", self.ns(), t));
        }
        f
    }
}

/// The store's mechanism name for a SCRAM hash.
pub fn mechanism_name(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "SCRAM-SHA-1",
        ScramHash::Sha256 => "SCRAM-SHA-256",
    }
}

async fn sasl(
    conn: &mut Conn<Tls>,
    auth: &Element,
    cb: &[ChannelBinding],
    state: &State,
    peer: SocketAddr,
) -> SaslOutcome {
    if state.config.server.require_sasl2 {
        let f = Profile::Legacy.failure("invalid-mechanism", Some("Log in with SASL2"));
        return send_failure(conn, f).await;
    }
    let mech = auth.attr("mechanism").unwrap_or("");
    let text = auth.text();
    match scram_exchange(conn, Profile::Legacy, mech, Some(&text), cb, state, peer).await {
        Ok((username, server_final)) => {
            let success = xml::text_el("success", NS_SASL, &scram::encode_payload(&server_final));
            if conn.send_el(&success).await.is_err() {
                return SaslOutcome::Closed;
            }
            SaslOutcome::Success(username)
        }
        Err(o) => o,
    }
}

/// A whole SCRAM exchange after the client's first message (`initial`, base64, possibly
/// empty or absent), through the account check. Returns the username and the server-final
/// message; the caller sends the profile's success. Failures are sent and throttled here.
pub(super) async fn scram_exchange(
    conn: &mut Conn<Tls>,
    profile: Profile,
    mechanism: &str,
    initial: Option<&str>,
    cb: &[ChannelBinding],
    state: &State,
    peer: SocketAddr,
) -> Result<(String, Vec<u8>), SaslOutcome> {
    let fail = |c: &str| profile.failure(c, None);
    let Ok(mech) = Mechanism::from_name(mechanism) else {
        return Err(send_failure(conn, fail("invalid-mechanism")).await);
    };
    if mech.is_plus() && cb.is_empty() {
        return Err(send_failure(conn, fail("invalid-mechanism")).await);
    }
    let mut server = ScramServer::new(mech, cb.to_vec(), !cb.is_empty());
    let mut initial = match scram::decode_payload(initial.unwrap_or("")) {
        Ok(b) => b,
        Err(_) => return Err(send_failure(conn, fail("incorrect-encoding")).await),
    };
    if initial.is_empty() {
        // No initial response: ask for it with an empty challenge.
        if conn
            .send_el(&el("challenge", profile.ns(), &[], vec![]))
            .await
            .is_err()
        {
            return Err(SaslOutcome::Closed);
        }
        initial = read_response(conn, profile).await?;
    }
    let first = match server.client_first(&initial) {
        Ok(f) => f,
        Err(e) => return Err(send_failure(conn, fail(e.condition())).await),
    };
    let username = snikket_xmpp::account::validate_localpart(&first.username).ok();
    // The account's state comes with the credential, for the check after the proof.
    let (creds, account_state) = match &username {
        Some(u) => match state
            .store
            .login_credential(u, mechanism_name(mech.hash()))
            .await
        {
            Ok(Some((c, account_state))) => (
                Some(StoredCredentials {
                    salt: c.salt,
                    iterations: c.iterations,
                    stored_key: c.stored_key,
                    server_key: c.server_key,
                }),
                Some(account_state),
            ),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::error!(error = %e, "credential lookup failed");
                return Err(send_failure(conn, fail("temporary-auth-failure")).await);
            }
        },
        None => (None, None),
    };
    let server_first = match server.server_first(creds.as_ref()) {
        Ok(b) => b,
        Err(e) => return Err(send_failure(conn, fail(e.condition())).await),
    };
    let challenge = xml::text_el(
        "challenge",
        profile.ns(),
        &scram::encode_payload(&server_first),
    );
    if conn.send_el(&challenge).await.is_err() {
        return Err(SaslOutcome::Closed);
    }
    let response = read_response(conn, profile).await?;
    match server.client_final(&response) {
        Ok(server_final) => {
            let Some(username) = username else {
                return Err(send_failure(conn, fail("not-authorized")).await);
            };
            admit(conn, profile, account_state, state, peer).await?;
            Ok((username, server_final))
        }
        Err(e) => {
            let who = username.as_deref().unwrap_or("");
            Err(auth_failed(conn, profile, e.condition(), who, state, peer).await)
        }
    }
}

/// After the credentials checked out: refuses disabled, deleted and unknown accounts, else
/// records the success for the throttle.
pub(super) async fn account_may_log_in(
    conn: &mut Conn<Tls>,
    profile: Profile,
    username: &str,
    state: &State,
    peer: SocketAddr,
) -> Result<(), SaslOutcome> {
    match state.store.account(username).await {
        Ok(a) => admit(conn, profile, a.map(|a| a.state), state, peer).await,
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            let failure = profile.failure("temporary-auth-failure", None);
            Err(send_failure(conn, failure).await)
        }
    }
}

/// Lets an account in the given state (`None`: no such account) log in, or answers why not.
async fn admit(
    conn: &mut Conn<Tls>,
    profile: Profile,
    account_state: Option<AccountState>,
    state: &State,
    peer: SocketAddr,
) -> Result<(), SaslOutcome> {
    let fail = |c: &str, t: Option<&str>| profile.failure(c, t);
    match account_state {
        Some(AccountState::Active) => {}
        Some(s) => {
            let text = if s == AccountState::PendingDeletion {
                "Account deleted"
            } else {
                "Account disabled"
            };
            return Err(send_failure(conn, fail("account-disabled", Some(text))).await);
        }
        None => return Err(send_failure(conn, fail("not-authorized", None)).await),
    }
    state.auth_throttle.success(peer.ip());
    Ok(())
}

/// Wrong credentials: logged, slowed down per address, answered with `condition`.
pub(super) async fn auth_failed(
    conn: &mut Conn<Tls>,
    profile: Profile,
    condition: &str,
    user: &str,
    state: &State,
    peer: SocketAddr,
) -> SaslOutcome {
    tracing::info!(user, %peer, "authentication failed");
    // Slow repeated failures from one address down, without locking the account.
    let delay = state.auth_throttle.failure(peer.ip());
    tokio::time::sleep(delay).await;
    send_failure(conn, profile.failure(condition, None)).await
}

pub(super) async fn send_failure(conn: &mut Conn<Tls>, failure: Element) -> SaslOutcome {
    if conn.send_el(&failure).await.is_err() {
        return SaslOutcome::Closed;
    }
    SaslOutcome::Failed
}

async fn read_response(conn: &mut Conn<Tls>, profile: Profile) -> Result<Vec<u8>, SaslOutcome> {
    match conn.next_within(PRE_AUTH_IDLE).await {
        Ok(Event::Stanza { element, .. }) if element.is("response", profile.ns()) => {
            match scram::decode_payload(&element.text()) {
                Ok(b) => Ok(b),
                Err(_) => {
                    let f = profile.failure("incorrect-encoding", None);
                    Err(send_failure(conn, f).await)
                }
            }
        }
        Ok(Event::Stanza { element, .. }) if element.is("abort", profile.ns()) => {
            Err(send_failure(conn, profile.failure("aborted", None)).await)
        }
        Ok(_) => {
            conn.fail("not-authorized", None).await;
            Err(SaslOutcome::Closed)
        }
        Err(e) => {
            report(conn, e).await;
            Err(SaslOutcome::Closed)
        }
    }
}

fn random_resource() -> String {
    use rand::RngCore;
    let mut b = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn bind(mut conn: Conn<Tls>, username: String, state: &Arc<State>) -> Option<Bound> {
    conn.set_limits(session_limits());
    if let Err(e) = conn.restart() {
        conn.fail(e.condition(), None).await;
        return None;
    }
    open_stream(&mut conn, state, post_auth_features(state)).await?;
    bind_loop(conn, username, state).await
}

/// The features of an authenticated stream that has no resource yet.
pub(super) fn post_auth_features(state: &State) -> Element {
    features(
        vec![
            el("bind", NS_BIND, &[], vec![]),
            el(
                "session",
                NS_SESSION,
                &[],
                vec![el("optional", NS_SESSION, &[], vec![])],
            ),
            el("ver", "urn:xmpp:features:rosterver", &[], vec![]),
            el("sm", crate::c2s::sm::NS_SM, &[], vec![]),
            el("csi", crate::c2s::csi::NS_CSI, &[], vec![]),
            limits_feature(),
        ]
        .into_iter()
        // XEP-0115 §6.3: the server's capabilities, so clients need not ask.
        .chain(state.caps.clone())
        .collect(),
    )
}

/// Resource binding (RFC 6120) or stream resumption (XEP-0198) on an authenticated stream.
pub(super) async fn bind_loop(
    mut conn: Conn<Tls>,
    username: String,
    state: &Arc<State>,
) -> Option<Bound> {
    loop {
        // XEP-0198 resumption: hand this connection to the hibernating session.
        let first = match conn.next_within(PRE_AUTH_IDLE).await {
            Ok(Event::Stanza { element, .. }) if element.is("resume", crate::c2s::sm::NS_SM) => {
                element
            }
            Ok(Event::Stanza { element, .. }) => {
                match bind_step(&mut conn, element, &username, state).await {
                    BindStep::Bound(rx, resource, session_id) => {
                        return Some(Bound {
                            sm: None,
                            conn,
                            username,
                            resource,
                            rx,
                            session_id,
                        });
                    }
                    BindStep::Continue => continue,
                    BindStep::Stop => return None,
                }
            }
            Ok(Event::StreamClose) => {
                conn.close().await;
                return None;
            }
            Ok(_) => {
                conn.fail("not-authorized", Some("Bind a resource first"))
                    .await;
                return None;
            }
            Err(e) => {
                report(&mut conn, e).await;
                return None;
            }
        };
        let previd = first.attr("previd").unwrap_or("").to_string();
        let h = first.attr("h").and_then(|h| h.parse::<u32>().ok());
        let Some(h) = h else {
            conn.fail("bad-format", None).await;
            return None;
        };
        match state.sm.resume(
            &previd,
            &username,
            crate::c2s::sm::Resumption {
                conn,
                h,
                success: None,
            },
        ) {
            Ok(()) => return None,
            Err(back) => {
                conn = back.conn;
                let failed = el(
                    "failed",
                    crate::c2s::sm::NS_SM,
                    &[],
                    vec![el("item-not-found", crate::xml::NS_STANZAS, &[], vec![])],
                );
                conn.send_el(&failed).await.ok()?;
            }
        }
    }
}

enum BindStep {
    Bound(crate::inbox::Inbox<crate::router::Outbound>, String, u64),
    Continue,
    Stop,
}

async fn bind_step(
    conn: &mut Conn<Tls>,
    iq: Element,
    username: &str,
    state: &Arc<State>,
) -> BindStep {
    if !iq.is("iq", NS_CLIENT) {
        conn.fail("not-authorized", Some("Bind a resource first"))
            .await;
        return BindStep::Stop;
    }
    let Some(bind_el) = iq
        .get_child("bind", NS_BIND)
        .filter(|_| iq.attr("type") == Some("set"))
    else {
        let reply = xml::error_reply(&iq, "not-authorized", Some("Bind a resource first"));
        return if conn.send_el(&reply).await.is_ok() {
            BindStep::Continue
        } else {
            BindStep::Stop
        };
    };
    let requested = bind_el
        .get_child("resource", NS_BIND)
        .map(|r| r.text().trim().to_string())
        .filter(|r| !r.is_empty() && r.len() <= 1023 && jid::ResourcePart::new(r).is_ok());
    let resource = requested.unwrap_or_else(random_resource);
    let Some((rx, session_id)) = register_session(conn, username, &resource, state).await else {
        return BindStep::Stop;
    };
    let full = format!("{username}@{}/{resource}", state.config.domain.ascii);
    let reply = xml::iq_result(
        &iq,
        Some(el(
            "bind",
            NS_BIND,
            &[],
            vec![xml::text_el("jid", NS_BIND, &full)],
        )),
    );
    if conn.send_el(&reply).await.is_err() {
        state.router.unregister(username, &resource, session_id);
        return BindStep::Stop;
    }
    BindStep::Bound(rx, resource, session_id)
}

/// Registers the session `username/resource` in the router (replacing an older session with
/// that resource) and records the activity; fails the stream when the account has too many.
pub(super) async fn register_session(
    conn: &mut Conn<Tls>,
    username: &str,
    resource: &str,
    state: &State,
) -> Option<(crate::inbox::Inbox<crate::router::Outbound>, u64)> {
    let max = state.config.server.max_user_clients as usize;
    let (rx, session_id, kicked) = match state.router.register(username, resource, max) {
        Ok(x) => x,
        Err(crate::router::RegisterError::TooMany) => {
            conn.fail(
                "policy-violation",
                Some("Too many active connections to this account"),
            )
            .await;
            return None;
        }
    };
    if kicked {
        tracing::debug!(user = %username, %resource, "replaced an older session with the same resource");
    }
    state.activity.touch(username);
    Some((rx, session_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a six-argument function returns, without calling it.
    fn size6<A, B, C, D, E, G, F>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn size3<A, B, C, F>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_connection_task_is_barely_bigger_than_its_session() {
        let task = size6(handle);
        let session = size3(session::run);
        // The span, the address slot, the box of inputs and the negotiation's result. Layered
        // `async` blocks and functions each kept room for what they had handed on: 440 bytes
        // more for every idle session.
        assert!(
            task <= session + 160,
            "connection task {task} bytes, session {session} bytes"
        );
    }
}
