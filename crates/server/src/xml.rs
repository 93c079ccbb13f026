//! Small helpers for building and editing `minidom` elements and common stanza replies.

use minidom::Element;
use rxml::{Namespace, NcName};

/// `jabber:client`.
pub const NS_CLIENT: &str = "jabber:client";
/// `urn:ietf:params:xml:ns:xmpp-stanzas`.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// `urn:xmpp:forward:0` (XEP-0297 stanza forwarding, inside carbons and archive results).
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// `urn:xmpp:hints` (XEP-0334 message processing hints).
pub const NS_HINTS: &str = "urn:xmpp:hints";

fn nc(name: &str) -> Option<NcName> {
    NcName::try_from(name).ok()
}

/// Sets (or replaces) an attribute without a namespace. Invalid names are ignored.
pub fn set_attr(el: &mut Element, name: &str, value: &str) {
    if let Some(n) = nc(name) {
        el.set_attr(Namespace::NONE, n, value.to_string());
    }
}

/// Removes an attribute without a namespace.
pub fn remove_attr(el: &mut Element, name: &str) {
    if let Some(n) = nc(name) {
        el.attrs_mut().remove(&Namespace::NONE, &n);
    }
}

/// An element with attributes and children.
pub fn el(name: &str, ns: &str, attrs: &[(&str, &str)], children: Vec<Element>) -> Element {
    let mut e = Element::builder(name, ns).build();
    for (k, v) in attrs {
        set_attr(&mut e, k, v);
    }
    for c in children {
        e.append_child(c);
    }
    e
}

/// An element holding only text.
pub fn text_el(name: &str, ns: &str, text: &str) -> Element {
    let mut e = Element::builder(name, ns).build();
    e.append_text(text);
    e
}

/// The error `type` RFC 6120 §8.3.3 assigns to a condition.
fn error_type(condition: &str) -> &'static str {
    match condition {
        "bad-request" | "jid-malformed" | "not-acceptable" | "policy-violation"
        | "unexpected-request" => "modify",
        "conflict"
        | "feature-not-implemented"
        | "gone"
        | "item-not-found"
        | "not-allowed"
        | "redirect"
        | "remote-server-not-found"
        | "service-unavailable" => "cancel",
        "forbidden" | "not-authorized" | "registration-required" | "subscription-required" => {
            "auth"
        }
        "internal-server-error" | "remote-server-timeout" | "resource-constraint" => "wait",
        _ => "cancel",
    }
}

/// The error reply to `stanza` (RFC 6120 §8.3): addresses swapped, original payload dropped.
pub fn error_reply(stanza: &Element, condition: &str, text: Option<&str>) -> Element {
    let mut err = el(
        "error",
        NS_CLIENT,
        &[("type", error_type(condition))],
        vec![el(condition, NS_STANZAS, &[], vec![])],
    );
    if let Some(t) = text {
        err.append_child(text_el("text", NS_STANZAS, t));
    }
    let mut reply = Element::builder(stanza.name(), NS_CLIENT).build();
    set_attr(&mut reply, "type", "error");
    if let Some(id) = stanza.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    if let Some(from) = stanza.attr("from") {
        set_attr(&mut reply, "to", from);
    }
    if let Some(to) = stanza.attr("to") {
        set_attr(&mut reply, "from", to);
    }
    reply.append_child(err);
    reply
}

/// An IQ result for `iq`, optionally with a payload.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut reply = el("iq", NS_CLIENT, &[("type", "result")], vec![]);
    if let Some(id) = iq.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    if let Some(from) = iq.attr("from") {
        set_attr(&mut reply, "to", from);
    }
    if let Some(to) = iq.attr("to") {
        set_attr(&mut reply, "from", to);
    }
    if let Some(p) = payload {
        reply.append_child(p);
    }
    reply
}

/// `jabber:x:data` (XEP-0004 data forms).
pub const NS_DATA: &str = "jabber:x:data";

/// A data form field with one value, and a `type` when given.
pub fn form_field(var: &str, kind: Option<&str>, value: &str) -> Element {
    let mut attrs = vec![("var", var)];
    if let Some(k) = kind {
        attrs.push(("type", k));
    }
    el(
        "field",
        NS_DATA,
        &attrs,
        vec![text_el("value", NS_DATA, value)],
    )
}

/// The first child element (the IQ payload).
pub fn payload(iq: &Element) -> Option<&Element> {
    iq.children().next()
}
