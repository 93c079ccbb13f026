//! A bound client session: one task that reads the client's stanzas and writes what the router
//! sends it, until either side closes or the server shuts down. With stream management
//! (XEP-0198) the task outlives a dropped connection and can continue on a new one. With Client
//! State Indication (XEP-0352, `c2s::csi`) stanzas for an inactive client are held back; held
//! stanzas follow sent ones: counted for resumption, or saved offline at the end.

use crate::c2s::conn::{Conn, ConnError};
use crate::c2s::csi::{CsiBuffer, NS_CSI};
use crate::c2s::negotiate::Bound;
use crate::c2s::sm::{enabled_element, wants_resume, Counters, Resumption, HIBERNATION, NS_SM};
use crate::router::Outbound;
use crate::routing::{self, Sender};
use crate::state::State;
use crate::xml::{self, el, NS_CLIENT};
use minidom::Element;
use snikket_runtime::CancellationToken;
use snikket_xmpp::framing::Event;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A bound session is closed after this long without any input (clients ping every few minutes).
const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Ask the client for an ack after this many unacknowledged stanzas.
const ACK_EVERY: usize = 5;

use crate::c2s::negotiate::Tls;

struct Sm {
    id: String,
    counters: Counters,
    resume_rx: Option<oneshot::Receiver<Resumption>>,
}

enum Step {
    Continue,
    /// The connection is gone; hibernate if resumable.
    Lost,
    /// End the session, closing the stream with this condition if any.
    End(Option<(&'static str, Option<&'static str>)>),
}

/// The next resumption of this session (boxed: it carries a whole connection, and the session
/// future would otherwise keep room for it at every await).
async fn resumed(rx: &mut Option<oneshot::Receiver<Resumption>>) -> Option<Box<Resumption>> {
    match rx {
        Some(r) => r.await.ok().map(Box::new),
        None => std::future::pending().await,
    }
}

/// Moves a value out of its box, freeing the box now rather than at the end of the caller's scope.
#[allow(clippy::boxed_local)] // taking the box is the point
pub(crate) fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// Runs the session until it ends, then broadcasts unavailable presence and unregisters it.
pub async fn run(bound: Box<Bound>, state: Arc<State>, shutdown: CancellationToken) {
    // Out of the box at once (the box would otherwise live as long as the session), and the
    // connection into its final place before the first await, so that the session's future
    // keeps room for one connection, not two.
    let Bound {
        conn,
        username,
        resource,
        mut rx,
        session_id,
        sm: inline_sm,
    } = unbox(bound);
    let mut conn: Option<Conn<Tls>> = Some(conn);
    let me = Sender::new(&username, &resource, &state.config.domain.ascii);
    tracing::debug!(jid = %me.full, "session started");
    state.blocklists.forget(&username);
    // Stream management enabled inline (Bind 2) starts with the session.
    let mut sm: Option<Sm> = inline_sm.map(|e| Sm {
        resume_rx: e.resume.then(|| state.sm.register(&e.id, &username)),
        id: e.id,
        counters: Counters::default(),
    });
    Box::pin(routing::sync_circles(&state, &username)).await;
    Box::pin(crate::push::session_bound(&state, &username, &resource)).await;
    let mut close = None;
    let mut csi = CsiBuffer::default();
    // When a hibernating session ends unless resumed.
    let mut hibernate_until = tokio::time::Instant::now();
    loop {
        let step = match conn.as_mut() {
            Some(c) => {
                let resume = sm.as_mut().map(|s| &mut s.resume_rx);
                let mut none = None;
                let resume = resume.unwrap_or(&mut none);
                tokio::select! {
                    _ = shutdown.cancelled() => Step::End(Some(("system-shutdown", None))),
                    r = resumed(resume) => {
                        if let (Some(r), Some(s)) = (r, sm.as_mut()) {
                            // The client resumed on a new connection while this one looked alive.
                            c.close().await;
                            match Box::pin(take_over(r, s, &mut csi, &state, &username)).await {
                                Some(newc) => { *c = newc; }
                                None => { conn = None; }
                            }
                        }
                        Step::Continue
                    }
                    out = rx.recv() => match out {
                        Some(Outbound::Stanza(el)) => {
                            let now = csi.push(*el);
                            Box::pin(write_all(c, &mut sm, &mut csi, now)).await
                        }
                        Some(Outbound::Close(c)) => Step::End(Some(*c)),
                        None => Step::End(None),
                    },
                    ev = c.next_within(IDLE_LIMIT) => Box::pin(read(c, ev, &state, &me, &mut sm, &mut csi)).await,
                }
            }
            None => {
                let Some(s) = sm.as_mut() else { break };
                tokio::select! {
                    _ = shutdown.cancelled() => Step::End(None),
                    r = resumed(&mut s.resume_rx) => match r {
                        Some(r) => {
                            conn = Box::pin(take_over(r, s, &mut csi, &state, &username)).await;
                            state.router.set_connected(&username, &resource, conn.is_some());
                            Step::Continue
                        }
                        None => Step::End(None),
                    },
                    out = rx.recv() => match out {
                        Some(Outbound::Stanza(el)) => {
                            // The device is asleep: wake it if it asked for push.
                            Box::pin(crate::push::hibernated(&state, &username, &resource, &el)).await;
                            s.counters.sent(*el);
                            Step::Continue
                        }
                        Some(Outbound::Close(_)) | None => Step::End(None),
                    },
                    _ = tokio::time::sleep_until(hibernate_until) => {
                        tracing::debug!(jid = %me.full, "hibernation ended");
                        Step::End(None)
                    }
                }
            }
        };
        match step {
            Step::Continue => {}
            Step::Lost => {
                conn = None;
                if let Some(s) = sm.as_mut() {
                    // Held stanzas queue behind the sent ones, to be resent on resumption.
                    for el in csi.reset() {
                        s.counters.sent(el);
                    }
                }
                if let Some(s) = sm.as_ref().filter(|s| s.resume_rx.is_some()) {
                    state.router.set_connected(&username, &resource, false);
                    let limit = if state.push.enabled(&username, &resource) {
                        crate::push::HIBERNATION_WITH_PUSH
                    } else {
                        HIBERNATION
                    };
                    hibernate_until = tokio::time::Instant::now() + limit;
                    tracing::debug!(jid = %me.full, secs = limit.as_secs(), "connection lost; hibernating");
                    // What the client never saw may need it to wake up.
                    if let Some(m) = s
                        .counters
                        .unacked
                        .iter()
                        .find(|m| crate::push::important(m))
                    {
                        Box::pin(crate::push::hibernated(&state, &username, &resource, m)).await;
                    }
                    continue;
                }
                break;
            }
            Step::End(c) => {
                close = c;
                break;
            }
        }
    }
    if let Some(c) = conn.as_mut() {
        match close {
            Some((condition, text)) => c.fail(condition, text).await,
            None => c.close().await,
        }
    }
    let mut unsent = std::collections::VecDeque::new();
    if let Some(s) = sm {
        state.sm.remove(&s.id);
        // Whatever the client never acknowledged is kept for its next login.
        unsent = s.counters.unacked;
    }
    // Then what CSI held back and never sent.
    unsent.extend(csi.reset());
    Box::pin(save_unacked(&state, &username, unsent)).await;
    // Stanzas queued for this session but never written.
    rx.close();
    let mut left = Vec::new();
    while let Some(Outbound::Stanza(el)) = rx.try_recv() {
        left.push(*el);
    }
    Box::pin(save_unacked(&state, &username, left.into())).await;
    state.push.session_ended(&username, &resource);
    Box::pin(routing::session_ended(&state, &me, session_id)).await;
    state.trimmer.note();
    tracing::debug!(jid = %me.full, "session ended");
}

async fn save_unacked(state: &State, username: &str, stanzas: std::collections::VecDeque<Element>) {
    for m in stanzas
        .into_iter()
        .filter(|m| m.name() == "message" && crate::archive::archivable(m))
    {
        if let Ok(b) = snikket_xmpp::framing::writer::element_to_bytes(&m) {
            if let Err(e) = state
                .store
                .store_offline(username, &String::from_utf8_lossy(&b))
                .await
            {
                tracing::error!(error = %e, "saving an unacknowledged message failed");
            }
        }
    }
}

async fn take_over(
    r: Box<Resumption>,
    s: &mut Sm,
    csi: &mut CsiBuffer,
    state: &State,
    username: &str,
) -> Option<Conn<Tls>> {
    let Resumption {
        mut conn,
        h,
        success,
    } = *r;
    // Held stanzas are resent after the unacknowledged ones; a resumed stream starts active
    // (XEP-0352 §5.2).
    for el in csi.reset() {
        s.counters.sent(el);
    }
    if !s.counters.ack(h) {
        conn.fail(
            "undefined-condition",
            Some("h is greater than the number of stanzas sent"),
        )
        .await;
        return None;
    }
    let resumed = el(
        "resumed",
        NS_SM,
        &[("h", &s.counters.h_in.to_string()), ("previd", &s.id)],
        vec![],
    );
    // Resumed inline in SASL2: `<resumed/>` goes inside the `<success/>`.
    let first = match success {
        Some(mut success) => {
            success.append_child(resumed);
            success
        }
        None => resumed,
    };
    conn.send_el(&first).await.ok()?;
    for stanza in &s.counters.unacked {
        conn.send_el(stanza).await.ok()?;
    }
    conn.send_el(&el("r", NS_SM, &[], vec![])).await.ok()?;
    s.resume_rx = Some(state.sm.register(&s.id, username));
    tracing::debug!(user = %username, resent = s.counters.unacked.len(), "session resumed");
    Some(conn)
}

async fn write(c: &mut Conn<Tls>, sm: &mut Option<Sm>, el_out: Element) -> Step {
    if c.send_el(&el_out).await.is_err() {
        if let Some(s) = sm.as_mut() {
            s.counters.sent(el_out);
        }
        return Step::Lost;
    }
    if let Some(s) = sm.as_mut() {
        s.counters.sent(el_out);
        if s.counters.unacked.len() % ACK_EVERY == 0
            && c.send_el(&el("r", NS_SM, &[], vec![])).await.is_err()
        {
            return Step::Lost;
        }
    }
    Step::Continue
}

/// Writes `stanzas` in order. When the connection is lost midway, what was not written goes
/// back to the front of the CSI buffer, which the session then treats like held stanzas.
async fn write_all(
    c: &mut Conn<Tls>,
    sm: &mut Option<Sm>,
    csi: &mut CsiBuffer,
    stanzas: Vec<Element>,
) -> Step {
    let mut it = stanzas.into_iter();
    while let Some(el_out) = it.next() {
        if let Step::Lost = write(c, sm, el_out).await {
            csi.restore(it.collect());
            return Step::Lost;
        }
    }
    Step::Continue
}

/// A CSI nonza (`<active/>`, `<inactive/>`): not a stanza, so stream management does not
/// count it.
async fn client_state(
    c: &mut Conn<Tls>,
    element: &Element,
    me: &Sender,
    sm: &mut Option<Sm>,
    csi: &mut CsiBuffer,
) -> Step {
    match element.name() {
        "active" => {
            let held = csi.set_active();
            tracing::debug!(jid = %me.full, held = held.len(), superseded = csi.superseded, "client active");
            write_all(c, sm, csi, held).await
        }
        "inactive" => {
            csi.set_inactive();
            tracing::debug!(jid = %me.full, "client inactive");
            Step::Continue
        }
        _ => Step::End(Some(("unsupported-stanza-type", None))),
    }
}

async fn read(
    c: &mut Conn<Tls>,
    ev: Result<Event, ConnError>,
    state: &Arc<State>,
    me: &Sender,
    sm: &mut Option<Sm>,
    csi: &mut CsiBuffer,
) -> Step {
    match ev {
        Ok(Event::Stanza { mut element, .. }) => {
            if element.ns() == NS_CSI {
                return client_state(c, &element, me, sm, csi).await;
            }
            if !csi.is_empty() {
                // The client is sending, so its radio is on: a good moment for what was held.
                let held = csi.flush();
                tracing::debug!(jid = %me.full, held = held.len(), "csi flush on client activity");
                if let Step::Lost = write_all(c, sm, csi, held).await {
                    return Step::Lost;
                }
            }
            if element.ns() == NS_SM {
                return stream_management(c, &element, state, me, sm).await;
            }
            if element.ns() != NS_CLIENT || !matches!(element.name(), "message" | "presence" | "iq")
            {
                return Step::End(Some(("unsupported-stanza-type", None)));
            }
            if let Some(s) = sm.as_mut() {
                s.counters.h_in = s.counters.h_in.wrapping_add(1);
            }
            // The server stamps `from`: a client can never speak for someone else.
            xml::set_attr(&mut element, "from", &me.full);
            // Not boxed again: this whole function runs in a box of its own (see the loop above),
            // so an idle session's task stays small with one allocation per stanza, not two.
            let replies = routing::from_client(state, me, element).await;
            write_all(c, sm, csi, replies).await
        }
        Ok(Event::StreamClose) => {
            // A clean close ends the session for good (no hibernation).
            if let Some(s) = sm.as_mut() {
                s.resume_rx = None;
            }
            Step::End(None)
        }
        Ok(Event::StreamOpen(_)) => Step::End(Some(("not-well-formed", None))),
        Err(ConnError::Stream(e)) => {
            tracing::debug!(condition = e.condition(), "stream error from client");
            Step::End(Some((e.condition(), None)))
        }
        Err(ConnError::Timeout) => Step::End(Some(("connection-timeout", None))),
        Err(ConnError::Io(_)) | Err(ConnError::Closed) => Step::Lost,
    }
}

async fn stream_management(
    c: &mut Conn<Tls>,
    element: &Element,
    state: &State,
    me: &Sender,
    sm: &mut Option<Sm>,
) -> Step {
    match element.name() {
        "enable" if sm.is_none() => {
            let id = crate::archive::new_stanza_id();
            let resume = wants_resume(element);
            let resume_rx = resume.then(|| state.sm.register(&id, &me.username));
            let enabled = enabled_element(&id, resume);
            *sm = Some(Sm {
                id,
                counters: Counters::default(),
                resume_rx,
            });
            if c.send_el(&enabled).await.is_err() {
                return Step::Lost;
            }
            Step::Continue
        }
        "enable" => {
            let failed = el(
                "failed",
                NS_SM,
                &[],
                vec![el("unexpected-request", xml::NS_STANZAS, &[], vec![])],
            );
            if c.send_el(&failed).await.is_err() {
                return Step::Lost;
            }
            Step::Continue
        }
        "r" => match sm {
            Some(s) => {
                let a = el("a", NS_SM, &[("h", &s.counters.h_in.to_string())], vec![]);
                if c.send_el(&a).await.is_err() {
                    return Step::Lost;
                }
                Step::Continue
            }
            None => Step::End(Some(("unsupported-stanza-type", None))),
        },
        "a" => {
            let h = element.attr("h").and_then(|h| h.parse::<u32>().ok());
            match (sm.as_mut(), h) {
                (Some(s), Some(h)) => {
                    if s.counters.ack(h) {
                        Step::Continue
                    } else {
                        Step::End(Some((
                            "undefined-condition",
                            Some("h is greater than the number of stanzas sent"),
                        )))
                    }
                }
                _ => Step::End(Some(("unsupported-stanza-type", None))),
            }
        }
        _ => Step::End(Some(("unsupported-stanza-type", None))),
    }
}
