//! Client State Indication (XEP-0352): while a client says it is `<inactive/>` (a phone in a
//! pocket), stanzas it does not need at once are held back and sent together later, so the
//! radio wakes up less often. Like Prosody's `mod_csi_simple`:
//!
//! - important stanzas (IQs, messages with a body or an encrypted payload, Jingle message
//!   initiation, subscription requests, errors, carbons and archive results wrapping such a
//!   message) are sent at once, after everything held before them, so order is preserved;
//! - presence is held and coalesced: only the latest presence of each full JID is kept; a
//!   sender's chat state notification supersedes its previous one; receipts, markers and PEP
//!   events are held;
//! - the buffer is flushed on `<active/>`, when the client sends something (its radio is on),
//!   when it would exceed [`MAX_HELD`] stanzas or [`MAX_HELD_BYTES`], and by the session task
//!   before the connection goes away (held stanzas are then treated like sent, unacknowledged
//!   ones, see `c2s::sm`).
//!
//! This module is pure logic; `c2s::session` feeds it and writes what it returns.

use crate::archive::{NS_MAM, NS_SID};
use crate::routing::NS_CARBONS;
use crate::xml::{NS_CLIENT, NS_FORWARD, NS_HINTS};
use minidom::Element;
use std::collections::VecDeque;

/// `urn:xmpp:csi:0`.
pub const NS_CSI: &str = "urn:xmpp:csi:0";
/// At most this many stanzas are held; one more flushes the buffer.
pub const MAX_HELD: usize = 256;
/// At most about this many bytes are held; more flushes the buffer.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// Payloads that make a message worth waking the client for, as (name, namespace); an empty
/// name matches any element of the namespace.
const IMPORTANT_PAYLOADS: &[(&str, &str)] = &[
    // OMEMO (legacy and current), OpenPGP for XMPP, legacy PGP, and the EME hint.
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
    ("encryption", "urn:xmpp:eme:0"),
    // Jingle Message Initiation: a call is ringing (propose, retract, accept, proceed, …).
    ("", "urn:xmpp:jingle-message:0"),
    ("", "urn:xmpp:jingle-message:1"),
    // Group chat invitations.
    ("x", "jabber:x:conference"),
];

/// What holding back does with a stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Send now (after what is held).
    Important,
    /// Hold back.
    Hold,
    /// Hold back, replacing an earlier held stanza of this kind from the same sender.
    Coalesce(Kind),
}

/// What a later stanza from the same sender supersedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Presence (available or unavailable).
    Presence,
    /// A chat state notification without content.
    ChatState,
}

/// Classifies a stanza about to be sent to an inactive client.
pub fn classify(stanza: &Element) -> Class {
    match stanza.name() {
        "presence" => match stanza.attr("type") {
            None | Some("unavailable") => Class::Coalesce(Kind::Presence),
            Some("error") => Class::Hold,
            // Subscription requests and answers: the user has something to do.
            Some(_) => Class::Important,
        },
        "message" => classify_message(stanza),
        // IQs (a client waits for its results) and anything unexpected.
        _ => Class::Important,
    }
}

fn classify_message(m: &Element) -> Class {
    match m.attr("type") {
        Some("error") => return Class::Important,
        // Headlines are ephemeral by definition (PEP events, notices).
        Some("headline") => return Class::Hold,
        _ => {}
    }
    if important_content(m) {
        return Class::Important;
    }
    // A carbon copy or an archive result is as important as the message it wraps.
    let wrapped = m
        .get_child("received", NS_CARBONS)
        .or_else(|| m.get_child("sent", NS_CARBONS))
        .or_else(|| m.get_child("result", NS_MAM))
        .and_then(|w| w.get_child("forwarded", NS_FORWARD))
        .and_then(|f| f.get_child("message", NS_CLIENT));
    if wrapped.is_some_and(important_content) {
        return Class::Important;
    }
    let mut chat_state = false;
    for c in m.children() {
        if c.ns() == NS_CHATSTATES {
            chat_state = true;
        } else if c.ns() != NS_HINTS && c.ns() != NS_SID {
            return Class::Hold;
        }
    }
    if chat_state {
        Class::Coalesce(Kind::ChatState)
    } else {
        Class::Hold
    }
}

fn important_content(m: &Element) -> bool {
    m.children().any(|c| {
        (c.ns() == NS_CLIENT && matches!(c.name(), "body" | "subject"))
            || IMPORTANT_PAYLOADS
                .iter()
                .any(|(name, ns)| c.ns() == *ns && (name.is_empty() || c.name() == *name))
            || (c.is("x", "http://jabber.org/protocol/muc#user")
                && c.has_child("invite", "http://jabber.org/protocol/muc#user"))
    })
}

/// A rough size of the serialized element (names, attributes and text), cheap to compute.
pub fn approx_size(e: &Element) -> usize {
    let attrs: usize = e
        .attrs()
        .iter()
        .map(|((_, name), value)| name.len() + value.len() + 4)
        .sum();
    let texts: usize = e.texts().map(str::len).sum();
    let children: usize = e.children().map(approx_size).sum();
    2 * e.name().len() + 5 + attrs + texts + children
}

struct Held {
    stanza: Element,
    /// Set for stanzas a later one from the same sender supersedes.
    key: Option<(Kind, String)>,
    size: usize,
}

/// The per-session CSI state and the stanzas held back while the client is inactive.
#[derive(Default)]
pub struct CsiBuffer {
    inactive: bool,
    held: VecDeque<Held>,
    bytes: usize,
    /// Stanzas dropped because a later one superseded them (for logs and tests).
    pub superseded: u64,
}

impl CsiBuffer {
    /// Whether the client said `<inactive/>` (a stream starts active).
    pub fn is_inactive(&self) -> bool {
        self.inactive
    }

    /// How many stanzas are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The client said `<inactive/>`: start holding back.
    pub fn set_inactive(&mut self) {
        self.inactive = true;
    }

    /// The client said `<active/>`: stop holding back; returns what to send now.
    pub fn set_active(&mut self) -> Vec<Element> {
        self.inactive = false;
        self.flush()
    }

    /// Back to the initial state (a resumed stream starts active, XEP-0352 §5.2); returns
    /// what was held, oldest first.
    pub fn reset(&mut self) -> Vec<Element> {
        self.set_active()
    }

    /// Takes a stanza for the client; returns what to send now, in order (nothing while it is
    /// held, or the held stanzas followed by this one).
    pub fn push(&mut self, stanza: Element) -> Vec<Element> {
        if !self.inactive {
            return vec![stanza];
        }
        let key = match classify(&stanza) {
            Class::Important => {
                let mut out = self.flush();
                out.push(stanza);
                return out;
            }
            Class::Hold => None,
            Class::Coalesce(kind) => stanza.attr("from").map(|f| (kind, f.to_string())),
        };
        if let Some(k) = &key {
            if let Some(i) = self.held.iter().position(|h| h.key.as_ref() == Some(k)) {
                if let Some(old) = self.held.remove(i) {
                    self.bytes -= old.size;
                    self.superseded += 1;
                }
            }
        }
        let size = approx_size(&stanza);
        self.bytes += size;
        self.held.push_back(Held { stanza, key, size });
        if self.held.len() > MAX_HELD || self.bytes > MAX_HELD_BYTES {
            return self.flush();
        }
        Vec::new()
    }

    /// Puts stanzas that could not be written back in front of what is held, in order (they
    /// are older); no cap applies.
    pub fn restore(&mut self, unsent: Vec<Element>) {
        for stanza in unsent.into_iter().rev() {
            let size = approx_size(&stanza);
            self.bytes += size;
            self.held.push_front(Held {
                stanza,
                key: None,
                size,
            });
        }
    }

    /// Everything held, oldest first; the buffer is empty afterwards.
    pub fn flush(&mut self) -> Vec<Element> {
        self.bytes = 0;
        self.held.drain(..).map(|h| h.stanza).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{el, text_el};

    fn presence(from: &str, show: Option<&str>) -> Element {
        let children = show
            .map(|s| vec![text_el("show", NS_CLIENT, s)])
            .unwrap_or_default();
        el("presence", NS_CLIENT, &[("from", from)], children)
    }

    fn message(from: &str, children: Vec<Element>) -> Element {
        el(
            "message",
            NS_CLIENT,
            &[("from", from), ("type", "chat")],
            children,
        )
    }

    fn body(text: &str) -> Element {
        text_el("body", NS_CLIENT, text)
    }

    fn chat_state(state: &str) -> Element {
        el(state, NS_CHATSTATES, &[], vec![])
    }

    fn carbon(kind: &str, inner: Element) -> Element {
        let fwd = el("forwarded", NS_FORWARD, &[], vec![inner]);
        el(
            "message",
            NS_CLIENT,
            &[("from", "a@x")],
            vec![el(kind, NS_CARBONS, &[], vec![fwd])],
        )
    }

    fn inactive() -> CsiBuffer {
        let mut b = CsiBuffer::default();
        b.set_inactive();
        b
    }

    fn shows(v: &[Element]) -> Vec<String> {
        v.iter()
            .map(|e| {
                let what = e
                    .get_child("show", NS_CLIENT)
                    .or_else(|| e.get_child("body", NS_CLIENT))
                    .map(Element::text)
                    .unwrap_or_default();
                format!("{} {} {what}", e.name(), e.attr("from").unwrap_or(""))
            })
            .collect()
    }

    #[test]
    fn classification_of_each_kind() {
        let important = [
            el("iq", NS_CLIENT, &[("type", "result")], vec![]),
            message("b@x/1", vec![body("hi")]),
            message(
                "b@x/1",
                vec![el(
                    "encrypted",
                    "eu.siacs.conversations.axolotl",
                    &[],
                    vec![],
                )],
            ),
            message(
                "b@x/1",
                vec![el("encrypted", "urn:xmpp:omemo:2", &[], vec![])],
            ),
            message(
                "b@x/1",
                vec![el(
                    "propose",
                    "urn:xmpp:jingle-message:0",
                    &[("id", "c1")],
                    vec![],
                )],
            ),
            message(
                "b@x/1",
                vec![el("retract", "urn:xmpp:jingle-message:0", &[], vec![])],
            ),
            carbon("received", message("b@x/1", vec![body("copied")])),
            carbon("sent", message("a@x/2", vec![body("copied")])),
            el(
                "message",
                NS_CLIENT,
                &[],
                vec![el(
                    "result",
                    NS_MAM,
                    &[],
                    vec![el(
                        "forwarded",
                        NS_FORWARD,
                        &[],
                        vec![message("b@x/1", vec![body("old")])],
                    )],
                )],
            ),
            el("message", NS_CLIENT, &[("type", "error")], vec![]),
            el("presence", NS_CLIENT, &[("type", "subscribe")], vec![]),
        ];
        for s in &important {
            assert_eq!(classify(s), Class::Important, "{s:?}");
        }
        let held = [
            message(
                "b@x/1",
                vec![el("received", "urn:xmpp:receipts", &[], vec![])],
            ),
            message(
                "b@x/1",
                vec![el("displayed", "urn:xmpp:chat-markers:0", &[], vec![])],
            ),
            el(
                "message",
                NS_CLIENT,
                &[("type", "headline"), ("from", "b@x")],
                vec![el(
                    "event",
                    "http://jabber.org/protocol/pubsub#event",
                    &[],
                    vec![],
                )],
            ),
            // Without the headline type a PEP event is still nothing to wake up for.
            el(
                "message",
                NS_CLIENT,
                &[("from", "b@x")],
                vec![el(
                    "event",
                    "http://jabber.org/protocol/pubsub#event",
                    &[],
                    vec![],
                )],
            ),
            carbon("received", message("b@x/1", vec![chat_state("composing")])),
            el("presence", NS_CLIENT, &[("type", "error")], vec![]),
        ];
        for s in &held {
            assert_eq!(classify(s), Class::Hold, "{s:?}");
        }
        assert_eq!(
            classify(&presence("b@x/1", Some("away"))),
            Class::Coalesce(Kind::Presence)
        );
        assert_eq!(
            classify(&el(
                "presence",
                NS_CLIENT,
                &[("type", "unavailable")],
                vec![]
            )),
            Class::Coalesce(Kind::Presence)
        );
        assert_eq!(
            classify(&message(
                "b@x/1",
                vec![
                    chat_state("composing"),
                    el("no-store", NS_HINTS, &[], vec![])
                ]
            )),
            Class::Coalesce(Kind::ChatState)
        );
        // A chat state with a body is a message.
        assert_eq!(
            classify(&message("b@x/1", vec![chat_state("active"), body("hi")])),
            Class::Important
        );
    }

    #[test]
    fn active_sends_everything_at_once() {
        let mut b = CsiBuffer::default();
        assert!(!b.is_inactive());
        let out = b.push(presence("b@x/1", None));
        assert_eq!(out.len(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn presence_is_coalesced_to_the_latest_per_full_jid() {
        let mut b = inactive();
        for (from, show) in [
            ("b@x/1", "away"),
            ("c@x/1", "dnd"),
            ("b@x/1", "xa"),
            ("b@x/2", "chat"),
            ("b@x/1", "dnd"),
        ] {
            assert!(b.push(presence(from, Some(show))).is_empty());
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.superseded, 2);
        assert_eq!(
            shows(&b.flush()),
            [
                "presence c@x/1 dnd",
                "presence b@x/2 chat",
                "presence b@x/1 dnd"
            ]
        );
        assert!(b.is_empty());
    }

    #[test]
    fn chat_states_are_superseded_per_sender() {
        let mut b = inactive();
        assert!(b
            .push(message("b@x/1", vec![chat_state("composing")]))
            .is_empty());
        assert!(b
            .push(message("c@x/1", vec![chat_state("composing")]))
            .is_empty());
        assert!(b
            .push(message("b@x/1", vec![chat_state("paused")]))
            .is_empty());
        let out = b.flush();
        let states: Vec<_> = out
            .iter()
            .map(|m| {
                let c = m.children().next().map(|c| c.name().to_string());
                (
                    m.attr("from").unwrap_or("").to_string(),
                    c.unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("c@x/1".to_string(), "composing".to_string()),
                ("b@x/1".to_string(), "paused".to_string())
            ]
        );
    }

    #[test]
    fn an_important_stanza_flushes_the_buffer_before_it_in_order() {
        let mut b = inactive();
        assert!(b.push(presence("b@x/1", Some("away"))).is_empty());
        assert!(b
            .push(message(
                "c@x/1",
                vec![el("received", "urn:xmpp:receipts", &[], vec![])]
            ))
            .is_empty());
        assert!(b.push(presence("c@x/1", Some("xa"))).is_empty());
        let out = b.push(message("b@x/1", vec![body("wake up")]));
        assert_eq!(
            shows(&out),
            [
                "presence b@x/1 away",
                "message c@x/1 ",
                "presence c@x/1 xa",
                "message b@x/1 wake up"
            ]
        );
        assert!(b.is_empty());
        assert!(b.is_inactive(), "still inactive after a flush");
        // And `<active/>` flushes what was held since, in order.
        assert!(b.push(presence("b@x/1", Some("dnd"))).is_empty());
        assert!(b.push(presence("c@x/1", Some("chat"))).is_empty());
        assert_eq!(
            shows(&b.set_active()),
            ["presence b@x/1 dnd", "presence c@x/1 chat"]
        );
        assert!(!b.is_inactive());
    }

    #[test]
    fn the_cap_on_held_stanzas_flushes() {
        let mut b = inactive();
        for i in 0..MAX_HELD {
            assert!(b.push(presence(&format!("u{i}@x/r"), None)).is_empty());
        }
        assert_eq!(b.len(), MAX_HELD);
        let out = b.push(presence("last@x/r", None));
        assert_eq!(out.len(), MAX_HELD + 1);
        assert_eq!(out[0].attr("from"), Some("u0@x/r"));
        assert_eq!(out[MAX_HELD].attr("from"), Some("last@x/r"));
        assert!(b.is_empty());
        // Coalesced presences do not count twice.
        for _ in 0..(2 * MAX_HELD) {
            assert!(b.push(presence("same@x/r", None)).is_empty());
        }
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_cap_on_held_bytes_flushes() {
        let mut b = inactive();
        let big = "x".repeat(MAX_HELD_BYTES / 4);
        let receipt = |i: usize| {
            message(
                &format!("u{i}@x/r"),
                vec![text_el("status", "urn:example", &big)],
            )
        };
        for i in 0..3 {
            assert!(b.push(receipt(i)).is_empty());
        }
        assert_eq!(b.push(receipt(3)).len(), 4);
        assert!(b.is_empty());
    }

    #[test]
    fn reset_returns_what_was_held_and_is_active() {
        let mut b = inactive();
        assert!(b.push(presence("b@x/1", None)).is_empty());
        assert_eq!(b.reset().len(), 1);
        assert!(!b.is_inactive());
        assert_eq!(b.push(presence("b@x/1", None)).len(), 1);
    }

    #[test]
    fn restored_stanzas_come_before_held_ones() {
        let mut b = inactive();
        assert!(b.push(presence("c@x/1", Some("xa"))).is_empty());
        b.restore(vec![
            message("b@x/1", vec![body("one")]),
            message("b@x/1", vec![body("two")]),
        ]);
        assert_eq!(
            shows(&b.reset()),
            [
                "message b@x/1 one",
                "message b@x/1 two",
                "presence c@x/1 xa"
            ]
        );
    }

    #[test]
    fn approx_size_grows_with_content() {
        let small = message("b@x/1", vec![body("hi")]);
        let large = message("b@x/1", vec![body(&"hi".repeat(100))]);
        assert!(approx_size(&large) >= approx_size(&small) + 198);
        let bytes = snikket_xmpp::framing::writer::element_to_bytes(&large).unwrap_or_default();
        assert!(
            approx_size(&large) * 2 > bytes.len(),
            "same order as the wire size"
        );
    }
}
