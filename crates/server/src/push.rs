//! Push notifications (XEP-0357): waking a phone whose app is asleep.
//!
//! A client enables push with the JID of its app server (e.g. the Snikket push service) and a
//! node naming the device. When a message that matters (a body, an OMEMO payload, a call) reaches
//! the account while the session that enabled push is hibernating (XEP-0198) or while the account
//! has no session at all (offline storage), the server publishes a notification to that node.
//! Notifications carry a summary only — never the body or the sender, as Snikket configures it —
//! plus the client's publish-options (its secret for the app server).
//!
//! Registrations are stored per account (at most [`MAX_REGISTRATIONS`]) and survive sessions; a
//! session's own registration is tracked here, and a client whose resource is a stable client id
//! (`Snikket.<id>`) gets its registration back when it binds again. An app server that keeps
//! answering with errors ([`MAX_ERRORS`] in a row, not counting `wait`) loses the registration.

use crate::routing::{self, Sender, Target};
use crate::state::{lock, State};
use crate::xml::{self, el, text_el, NS_CLIENT};
use minidom::Element;
use snikket_store::PushRegistration;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `urn:xmpp:push:0`.
pub const NS_PUSH: &str = "urn:xmpp:push:0";
/// Registrations kept per account (Prosody's `push_max_devices`).
pub const MAX_REGISTRATIONS: usize = 5;
/// Consecutive errors from an app server after which a registration is dropped.
pub const MAX_ERRORS: u32 = 16;
/// How long a session with push enabled may hibernate (Prosody's `push_max_hibernation_timeout`).
pub const HIBERNATION_WITH_PUSH: Duration = Duration::from_secs(72 * 3600);
/// Longest accepted node name or JID.
const MAX_ATTR: usize = 1024;
/// Longest accepted publish-options form, serialized.
const MAX_OPTIONS: usize = 4096;
/// Sent notifications remembered while their answers are awaited.
const MAX_PENDING: usize = 10_000;
/// An unanswered notification is forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(300);

const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_DATA: &str = "jabber:x:data";
const NS_OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
const NS_OMEMO: &str = "urn:xmpp:omemo:2";
const NS_JINGLE_MESSAGE: &str = "urn:xmpp:jingle-message:0";
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// Encrypted notifications (Tigase's extension, which the Snikket iOS app uses).
pub const NS_PUSH_ENCRYPT: &str = "tigase:push:encrypt:0";
/// The one algorithm of [`NS_PUSH_ENCRYPT`].
pub const NS_PUSH_ENCRYPT_AES_128_GCM: &str = "tigase:push:encrypt:aes-128-gcm";
/// Call notifications marked as VoIP pushes.
pub const NS_PUSH_JINGLE: &str = "tigase:push:jingle:0";
/// Tells the app server a notification is urgent (Tigase's extension).
pub const NS_PUSH_PRIORITY: &str = "tigase:push:priority:0";
/// Filter: nothing from senders the user has not let see their presence.
pub const NS_FILTER_UNKNOWN: &str = "tigase:push:filter:ignore-unknown:0";
/// Filter: nothing from these addresses.
pub const NS_FILTER_MUTED: &str = "tigase:push:filter:muted:0";
/// Filter: per group chat, always, only when mentioned, or never.
pub const NS_FILTER_GROUPCHAT: &str = "tigase:push:filter:groupchat:0";
const NS_REFERENCE: &str = "urn:xmpp:reference:0";
/// Longest accepted set of filters, serialized.
const MAX_FILTERS: usize = 16_384;
/// Longest message text put into an encrypted notification, in bytes.
const MAX_PUSH_TEXT: usize = 255;

/// The push service and node a registration publishes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    username: String,
    service: String,
    node: String,
}

struct Pending {
    key: Key,
    sent: Instant,
}

/// Live push state: which session enabled which registration, notifications awaiting an
/// answer, and error counts.
#[derive(Default)]
pub struct Push {
    /// (username, resource) → the registration that session enabled.
    sessions: Mutex<HashMap<(String, String), PushRegistration>>,
    pending: Mutex<HashMap<String, Pending>>,
    errors: Mutex<HashMap<Key, u32>>,
}

impl Push {
    /// Whether the session `username/resource` enabled push (it may then hibernate longer).
    pub fn enabled(&self, username: &str, resource: &str) -> bool {
        lock(&self.sessions).contains_key(&(username.to_string(), resource.to_string()))
    }

    fn session(&self, username: &str, resource: &str) -> Option<PushRegistration> {
        lock(&self.sessions)
            .get(&(username.to_string(), resource.to_string()))
            .cloned()
    }

    fn set_session(&self, username: &str, resource: &str, reg: PushRegistration) {
        lock(&self.sessions).insert((username.to_string(), resource.to_string()), reg);
    }

    /// Forgets the session's registration (the session ended; the stored one stays).
    pub fn session_ended(&self, username: &str, resource: &str) {
        lock(&self.sessions).remove(&(username.to_string(), resource.to_string()));
    }

    /// Drops sessions' links to registrations that no longer exist.
    fn unlink(&self, username: &str, service: &str, node: Option<&str>) {
        lock(&self.sessions)
            .retain(|(u, _), r| !selects(u, &r.service, &r.node, username, service, node));
    }

    /// The number of consecutive errors of a registration.
    pub fn error_count(&self, username: &str, service: &str, node: &str) -> u32 {
        let key = Key {
            username: username.into(),
            service: service.into(),
            node: node.into(),
        };
        lock(&self.errors).get(&key).copied().unwrap_or(0)
    }
}

/// Handles `<enable/>` and `<disable/>` sent to one's own account; `None` for other IQs.
pub async fn iq(state: &State, me: &Sender, iq: &Element) -> Option<Element> {
    let p = xml::payload(iq)?;
    if p.ns() != NS_PUSH {
        return None;
    }
    if iq.attr("type") != Some("set") {
        return Some(xml::error_reply(iq, "bad-request", None));
    }
    let Some(service) = p
        .attr("jid")
        .filter(|j| !j.is_empty() && j.len() <= MAX_ATTR)
    else {
        return Some(xml::error_reply(iq, "bad-request", Some("Missing jid")));
    };
    let Ok(service) = jid::Jid::new(service) else {
        return Some(xml::error_reply(iq, "jid-malformed", None));
    };
    let service = service.to_string();
    let node = p.attr("node").filter(|n| !n.is_empty());
    if node.is_some_and(|n| n.len() > MAX_ATTR) {
        return Some(xml::error_reply(
            iq,
            "not-acceptable",
            Some("Node too long"),
        ));
    }
    match p.name() {
        "enable" => {
            let Some(node) = node else {
                return Some(xml::error_reply(iq, "bad-request", Some("Missing node")));
            };
            let options = match publish_options(p) {
                Ok(o) => o,
                Err(why) => return Some(xml::error_reply(iq, "bad-request", Some(why))),
            };
            let mut reg = snikket_store::new_registration(&service, node, &options, &me.resource);
            match encryption_key(p) {
                Ok(key) => reg.encrypt_key = key,
                Err((condition, why)) => {
                    return Some(xml::error_reply(iq, condition, Some(why)));
                }
            }
            match filters_of(p) {
                Ok(f) => reg.filters = f,
                Err(why) => return Some(xml::error_reply(iq, "not-acceptable", Some(why))),
            }
            if let Err(e) = state
                .store
                .push_enable(&me.username, &reg, MAX_REGISTRATIONS)
                .await
            {
                tracing::error!(error = %e, "storing a push registration failed");
                return Some(xml::error_reply(iq, "internal-server-error", None));
            }
            clear_errors(state, &me.username, &service, Some(node));
            state.push.set_session(&me.username, &me.resource, reg);
            tracing::info!(jid = %me.full, service = %service, "push enabled");
            Some(xml::iq_result(iq, None))
        }
        "disable" => {
            match state.store.push_disable(&me.username, &service, node).await {
                Ok(n) => {
                    tracing::info!(jid = %me.full, service = %service, removed = n, "push disabled");
                }
                Err(e) => {
                    tracing::error!(error = %e, "removing a push registration failed");
                    return Some(xml::error_reply(iq, "internal-server-error", None));
                }
            }
            clear_errors(state, &me.username, &service, node);
            state.push.unlink(&me.username, &service, node);
            Some(xml::iq_result(iq, None))
        }
        _ => Some(xml::error_reply(iq, "bad-request", None)),
    }
}

fn clear_errors(state: &State, username: &str, service: &str, node: Option<&str>) {
    lock(&state.push.errors)
        .retain(|k, _| !selects(&k.username, &k.service, &k.node, username, service, node));
}

/// Whether the registration (user, service, node) is one that a `<disable/>` of `service`
/// (and `node`, when given) by `username` addresses.
fn selects(
    user: &str,
    reg_service: &str,
    reg_node: &str,
    username: &str,
    service: &str,
    node: Option<&str>,
) -> bool {
    user == username && reg_service == service && node.is_none_or(|n| n == reg_node)
}

/// The key of `<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'>base64</encrypt>` in an
/// `<enable/>`, if there is one: 16 bytes, kept in base64.
fn encryption_key(enable: &Element) -> Result<Option<String>, (&'static str, &'static str)> {
    use base64::Engine;
    let Some(encrypt) = enable.get_child("encrypt", NS_PUSH_ENCRYPT) else {
        return Ok(None);
    };
    if encrypt.attr("alg") != Some("aes-128-gcm") {
        return Err(("feature-not-implemented", "Unknown encryption algorithm"));
    }
    let text = encrypt.text();
    let key = text.trim();
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 16 => Ok(Some(key.to_string())),
        _ => Err(("bad-request", "Invalid encryption key")),
    }
}

/// The Tigase filters in an `<enable/>` (ignore-unknown, muted, groupchat), kept as sent inside
/// one `<filters/>` element, or empty.
fn filters_of(enable: &Element) -> Result<String, &'static str> {
    let kept: Vec<Element> = enable
        .children()
        .filter(|c| {
            c.is("ignore-unknown", NS_FILTER_UNKNOWN)
                || c.is("muted", NS_FILTER_MUTED)
                || c.is("groupchat", NS_FILTER_GROUPCHAT)
        })
        .cloned()
        .collect();
    if kept.is_empty() {
        return Ok(String::new());
    }
    let bytes = snikket_xmpp::framing::writer::element_to_bytes(&el("filters", NS_PUSH, &[], kept))
        .map_err(|_| "Unreadable filters")?;
    if bytes.len() > MAX_FILTERS {
        return Err("Filters too large");
    }
    String::from_utf8(bytes).map_err(|_| "Unreadable filters")
}

/// The bare, lower-cased form of an address, for comparing filter entries.
fn bare_lower(addr: &str) -> String {
    jid::Jid::new(addr)
        .map(|j| j.to_bare().to_string())
        .unwrap_or_else(|_| addr.to_string())
        .to_lowercase()
}

/// Whether the device's filters keep this notification back (as Prosody's
/// `mod_cloud_notify_filters` does).
async fn filtered(state: &State, username: &str, reg: &PushRegistration, stanza: &Element) -> bool {
    if reg.filters.is_empty() {
        return false;
    }
    let Ok(filters) = reg.filters.parse::<Element>() else {
        return false;
    };
    let m = original(stanza);
    let sender = bare_lower(m.attr("from").unwrap_or_default());
    if filters.has_child("ignore-unknown", NS_FILTER_UNKNOWN) {
        let known = matches!(
            state.store.roster_item(username, &sender).await,
            Ok(Some(i)) if i.subscription.has_from()
        );
        if !known {
            return true;
        }
    }
    if let Some(muted) = filters.get_child("muted", NS_FILTER_MUTED) {
        let is_muted = muted
            .children()
            .filter(|i| i.name() == "item")
            .any(|i| i.attr("jid").is_some_and(|j| bare_lower(j) == sender));
        if is_muted {
            return true;
        }
    }
    if m.attr("type") != Some("groupchat") {
        return false;
    }
    let rule = filters
        .get_child("groupchat", NS_FILTER_GROUPCHAT)
        .and_then(|g| {
            g.children()
                .filter(|r| r.name() == "room")
                .find(|r| r.attr("jid").is_some_and(|j| bare_lower(j) == sender))
        });
    match rule.and_then(|r| r.attr("allow").map(|a| (a, r.attr("nick")))) {
        Some(("never", _)) => true,
        Some(("mentioned", nick)) => {
            let ours = format!("xmpp:{username}@{}", state.config.domain.ascii);
            let as_occupant = nick.map(|n| format!("xmpp:{sender}/{n}"));
            let mentioned = m
                .children()
                .filter(|r| r.is("reference", NS_REFERENCE) && r.attr("type") == Some("mention"))
                .filter_map(|r| r.attr("uri"))
                .any(|uri| uri == ours || as_occupant.as_deref() == Some(uri));
            !mentioned
        }
        _ => false,
    }
}

/// The client's publish-options form (XEP-0357 §5: a submitted data form), serialized.
fn publish_options(enable: &Element) -> Result<String, &'static str> {
    let Some(form) = enable.get_child("x", NS_DATA) else {
        return Ok(String::new());
    };
    if form.attr("type") != Some("submit") {
        return Err("The publish options must be a submitted data form");
    }
    let bytes = snikket_xmpp::framing::writer::element_to_bytes(form)
        .map_err(|_| "Unreadable publish options")?;
    if bytes.len() > MAX_OPTIONS {
        return Err("Publish options too large");
    }
    String::from_utf8(bytes).map_err(|_| "Unreadable publish options")
}

/// A session bound: a client with a stable id (`Snikket.<id>`) gets back the registration it
/// made before, so pushes keep flowing even if it does not enable push again at once.
pub async fn session_bound(state: &State, username: &str, resource: &str) {
    if !resource.starts_with("Snikket.") {
        return;
    }
    match state.store.push_registrations(username).await {
        Ok(regs) => {
            if let Some(reg) = regs.into_iter().find(|r| r.client_id == resource) {
                tracing::debug!(user = %username, "push registration restored for a known client");
                state.push.set_session(username, resource, reg);
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading push registrations failed"),
    }
}

/// Whether a stanza is worth waking a phone for: a message with a body, an encrypted payload or
/// a call proposal, also when it comes as a carbon copy.
pub fn important(stanza: &Element) -> bool {
    if stanza.name() != "message" || stanza.attr("type") == Some("error") {
        return false;
    }
    let carried = stanza
        .children()
        .filter(|c| c.ns() == NS_CARBONS && matches!(c.name(), "received" | "sent"))
        .filter_map(|c| c.get_child("forwarded", xml::NS_FORWARD))
        .find_map(|f| f.get_child("message", NS_CLIENT));
    let m = carried.unwrap_or(stanza);
    m.children().any(|c| {
        (c.name() == "body" && !c.text().trim().is_empty())
            || (c.name() == "encrypted" && matches!(c.ns().as_str(), NS_OMEMO_LEGACY | NS_OMEMO))
            || c.is("propose", NS_JINGLE_MESSAGE)
    })
}

/// A stanza reached a hibernating session: wake the device if the session enabled push.
pub async fn hibernated(state: &State, username: &str, resource: &str, stanza: &Element) {
    if !important(stanza) {
        return;
    }
    if let Some(reg) = state.push.session(username, resource) {
        notify(state, username, &reg, stanza).await;
    }
}

/// A message was stored offline: wake every registered device of the account.
pub async fn offline(state: &State, username: &str, stanza: &Element) {
    if !important(stanza) {
        return;
    }
    match state.store.push_registrations(username).await {
        Ok(regs) => {
            for reg in regs {
                notify(state, username, &reg, stanza).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading push registrations failed"),
    }
}

/// Publishes one summary notification for `reg`.
async fn notify(state: &State, username: &str, reg: &PushRegistration, stanza: &Element) {
    if filtered(state, username, reg, stanza).await {
        tracing::debug!(user = %username, service = %reg.service, "push held back by the device's filters");
        return;
    }
    let from = format!("{username}@{}", state.config.domain.ascii);
    let id = crate::archive::new_stanza_id();
    let push = notification(&from, &id, reg, stanza);
    let key = Key {
        username: username.to_string(),
        service: reg.service.clone(),
        node: reg.node.clone(),
    };
    {
        let mut pending = lock(&state.push.pending);
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| p.sent.elapsed() < PENDING_TTL);
            if pending.len() >= MAX_PENDING {
                tracing::warn!("too many unanswered push notifications; dropping one");
                return;
            }
        }
        pending.insert(
            id.clone(),
            Pending {
                key,
                sent: Instant::now(),
            },
        );
    }
    let sent = match routing::target(state, &reg.service) {
        Target::Local {
            username: service_user,
            resource: Some(r),
        } => state.router.to_resource(&service_user, &r, push),
        Target::Remote(_) => {
            crate::s2s::send(state, push).await;
            true
        }
        _ => false,
    };
    if sent {
        tracing::debug!(user = %username, service = %reg.service, "push notification sent");
    } else {
        lock(&state.push.pending).remove(&id);
    }
}

/// The `<iq type='set'>` publishing a summary (XEP-0357 §5) with the client's publish-options.
fn notification(from: &str, id: &str, reg: &PushRegistration, stanza: &Element) -> Element {
    let field = |var: &str, value: &str| {
        el(
            "field",
            NS_DATA,
            &[("var", var)],
            vec![text_el("value", NS_DATA, value)],
        )
    };
    let call = stanza
        .children()
        .any(|c| c.is("propose", NS_JINGLE_MESSAGE));
    let summary = el(
        "x",
        NS_DATA,
        &[("type", "submit")],
        vec![
            field("FORM_TYPE", "urn:xmpp:push:summary"),
            field("message-count", "1"),
            // Tells the app server to wake the phone at once (calls and messages alike).
            field(
                "last-message-priority",
                if call { "high" } else { "normal" },
            ),
        ],
    );
    // With a device key the summary is replaced by what only the device can read: sender and
    // text (the app server sees neither), as Snikket's iOS app expects.
    let content = match reg
        .encrypt_key
        .as_deref()
        .and_then(|k| encrypted(k, stanza))
    {
        Some(e) => e,
        None => summary,
    };
    let item = el(
        "item",
        NS_PUBSUB,
        &[],
        // Only messages that matter are pushed (`important`), so every one is urgent.
        vec![el(
            "notification",
            NS_PUSH,
            &[],
            vec![content, text_el("priority", NS_PUSH_PRIORITY, "high")],
        )],
    );
    let mut pubsub = el(
        "pubsub",
        NS_PUBSUB,
        &[],
        vec![el("publish", NS_PUBSUB, &[("node", &reg.node)], vec![item])],
    );
    if let Some(form) = parse_options(&reg.options) {
        pubsub.append_child(el("publish-options", NS_PUBSUB, &[], vec![form]));
    }
    el(
        "iq",
        NS_CLIENT,
        &[
            ("type", "set"),
            ("from", from),
            ("to", &reg.service),
            ("id", id),
        ],
        vec![pubsub],
    )
}

/// The message a notification is about: the original of a carbon copy, else the stanza.
fn original(stanza: &Element) -> &Element {
    ["received", "sent"]
        .iter()
        .find_map(|k| stanza.get_child(k, NS_CARBONS))
        .and_then(|c| c.get_child("forwarded", xml::NS_FORWARD))
        .and_then(|f| f.get_child("message", NS_CLIENT))
        .unwrap_or(stanza)
}

/// The JSON the device decrypts (Tigase encrypted push): unread count, sender, text, kind.
fn push_payload(stanza: &Element) -> serde_json::Value {
    let m = original(stanza);
    let from = m.attr("from").unwrap_or_default();
    let bare = jid::Jid::new(from)
        .map(|j| j.to_bare().to_string())
        .unwrap_or_default();
    let encrypted = m.has_child("encrypted", NS_OMEMO_LEGACY)
        || m.has_child("encrypted", NS_OMEMO)
        || m.has_child("encryption", "urn:xmpp:eme:0");
    let text = if encrypted {
        Some("You have received an encrypted message".to_string())
    } else {
        m.get_child("body", NS_CLIENT).map(|b| {
            let body = b.text();
            let mut end = body.len().min(MAX_PUSH_TEXT);
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body[..end].to_string()
        })
    };
    let mut payload = serde_json::json!({ "unread": 1, "sender": bare });
    if let Some(t) = text {
        payload["message"] = t.into();
    }
    if m.attr("type") == Some("groupchat") {
        payload["type"] = "groupchat".into();
        if let Ok(j) = jid::Jid::new(from) {
            if let Some(nick) = j.resource() {
                payload["nickname"] = nick.as_str().into();
            }
        }
    } else if let Some(propose) = m.get_child("propose", NS_JINGLE_MESSAGE) {
        let mut media: Vec<&str> = propose
            .children()
            .filter(|d| d.name() == "description")
            .filter_map(|d| d.attr("media"))
            .collect();
        media.sort_unstable();
        media.dedup();
        payload["type"] = "call".into();
        payload["sid"] = propose.attr("id").unwrap_or_default().into();
        payload["media"] = media.into();
        payload["sender"] = from.into();
    } else {
        payload["type"] = "chat".into();
    }
    payload
}

/// `<encrypted xmlns='tigase:push:encrypt:0' iv='…'>` holding the AES-128-GCM encryption (with
/// its tag) of the payload under the device's key; `None` if the key is unusable.
fn encrypted(key_b64: &str, stanza: &Element) -> Option<Element> {
    use base64::Engine;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    use ring::rand::SecureRandom;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(key_b64).ok()?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).ok()?);
    let mut iv = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut iv).ok()?;
    let payload = push_payload(stanza);
    let call = payload["type"] == "call";
    let mut data = serde_json::to_vec(&payload).ok()?;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut data)
        .ok()?;
    let iv = b64.encode(iv);
    let mut attrs = vec![("iv", iv.as_str())];
    if call {
        attrs.push(("type", "voip"));
    }
    let mut e = el("encrypted", NS_PUSH_ENCRYPT, &attrs, vec![]);
    e.append_text(b64.encode(data));
    Some(e)
}

fn parse_options(options: &str) -> Option<Element> {
    if options.is_empty() {
        return None;
    }
    options.parse::<Element>().ok()
}

/// An IQ result or error addressed to an account: if it answers a notification, count it and
/// return true (the stanza is consumed).
pub async fn iq_response(state: &State, me: &Sender, iq: &Element) -> bool {
    let Some(id) = iq.attr("id") else {
        return false;
    };
    let pending = {
        let mut m = lock(&state.push.pending);
        match m.get(id) {
            Some(p) if answers(&p.key, me, iq) => m.remove(id),
            _ => None,
        }
    };
    let Some(Pending { key, .. }) = pending else {
        return false;
    };
    if iq.attr("type") == Some("result") {
        lock(&state.push.errors).remove(&key);
        return true;
    }
    let error = iq.get_child("error", NS_CLIENT);
    if error.and_then(|e| e.attr("type")) == Some("wait") {
        tracing::debug!(service = %key.service, "push service asks to wait; not counted");
        return true;
    }
    let count = {
        let mut errors = lock(&state.push.errors);
        let c = errors.entry(key.clone()).or_insert(0);
        *c += 1;
        *c
    };
    tracing::info!(user = %key.username, service = %key.service, errors = count, "push service returned an error");
    if count >= MAX_ERRORS {
        tracing::warn!(user = %key.username, service = %key.service, "disabling a push registration after repeated errors");
        if let Err(e) = state
            .store
            .push_disable(&key.username, &key.service, Some(&key.node))
            .await
        {
            tracing::error!(error = %e, "removing a push registration failed");
        }
        lock(&state.push.errors).remove(&key);
        state
            .push
            .unlink(&key.username, &key.service, Some(&key.node));
    }
    true
}

/// Whether `iq` comes from the registration's service and goes to its account.
fn answers(key: &Key, me: &Sender, iq: &Element) -> bool {
    let to_account = iq
        .attr("to")
        .and_then(|t| jid::Jid::new(t).ok())
        .and_then(|j| j.node().map(|n| n.as_str() == key.username))
        .unwrap_or(false);
    let from_service = jid::Jid::new(&key.service)
        .map(|s| {
            if s.resource().is_some() {
                s.to_string() == me.full
            } else {
                s.to_string() == me.bare
            }
        })
        .unwrap_or(false);
    to_account && from_service
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Element {
        s.parse().expect("test xml")
    }

    #[test]
    fn messages_that_matter_wake_the_phone() {
        let body = parse("<message xmlns='jabber:client' type='chat'><body>hi</body></message>");
        let empty = parse("<message xmlns='jabber:client' type='chat'><body> </body></message>");
        let state = parse("<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
        let omemo = parse("<message xmlns='jabber:client'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>");
        let call = parse("<message xmlns='jabber:client'><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>");
        let carbon = parse("<message xmlns='jabber:client'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'><body>x</body></message></forwarded></received></message>");
        let error = parse("<message xmlns='jabber:client' type='error'><body>x</body></message>");
        let presence = parse("<presence xmlns='jabber:client'/>");
        assert!(important(&body));
        assert!(!important(&empty));
        assert!(!important(&state));
        assert!(important(&omemo));
        assert!(important(&call));
        assert!(important(&carbon));
        assert!(!important(&error));
        assert!(!important(&presence));
    }

    #[test]
    fn notifications_carry_no_body_and_the_clients_options() {
        let reg = PushRegistration {
            service: "push.example.net".into(),
            node: "device-1".into(),
            options: "<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>s3</value></field></x>".into(),
            client_id: "phone".into(),
            created_at: 0,
            encrypt_key: None,
            filters: String::new(),
        };
        let m = parse("<message xmlns='jabber:client' from='bob@example.com/x'><body>the secret plan</body></message>");
        let iq = notification("alice@example.com", "id1", &reg, &m);
        let text = String::from(&iq);
        assert!(!text.contains("secret plan"), "{text}");
        assert!(!text.contains("bob@example.com"), "{text}");
        let pubsub = iq.get_child("pubsub", NS_PUBSUB).expect("pubsub");
        let publish = pubsub.get_child("publish", NS_PUBSUB).expect("publish");
        assert_eq!(publish.attr("node"), Some("device-1"));
        assert!(text.contains("urn:xmpp:push:summary"));
        let opts = pubsub
            .get_child("publish-options", NS_PUBSUB)
            .expect("publish-options");
        assert!(String::from(opts).contains("s3"));
        assert_eq!(iq.attr("to"), Some("push.example.net"));
        assert_eq!(iq.attr("from"), Some("alice@example.com"));
    }

    #[test]
    fn publish_options_must_be_a_submitted_form_of_bounded_size() {
        let ok = parse("<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data' type='submit'/></enable>");
        assert!(publish_options(&ok).is_ok_and(|s| s.contains("submit")));
        let none = parse("<enable xmlns='urn:xmpp:push:0' jid='p' node='n'/>");
        assert_eq!(publish_options(&none), Ok(String::new()));
        let form = parse("<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data' type='form'/></enable>");
        assert!(publish_options(&form).is_err());
        let big = format!(
            "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data' type='submit'><field var='a'><value>{}</value></field></x></enable>",
            "a".repeat(MAX_OPTIONS)
        );
        assert!(publish_options(&parse(&big)).is_err());
    }

    #[test]
    fn encrypted_notifications_only_the_device_can_read() {
        use base64::Engine;
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = [7u8; 16];
        let reg = PushRegistration {
            service: "push.example.net".into(),
            node: "device-1".into(),
            options: String::new(),
            client_id: "phone".into(),
            created_at: 0,
            encrypt_key: Some(b64.encode(key)),
            filters: String::new(),
        };
        let m = parse("<message xmlns='jabber:client' type='chat' from='bob@example.com/x'><body>the secret plan</body></message>");
        let iq = notification("alice@example.com", "id1", &reg, &m);
        let text = String::from(&iq);
        assert!(
            !text.contains("secret plan") && !text.contains("bob@"),
            "{text}"
        );
        let enc = iq
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("publish", NS_PUBSUB))
            .and_then(|p| p.get_child("item", NS_PUBSUB))
            .and_then(|i| i.get_child("notification", NS_PUSH))
            .and_then(|n| n.get_child("encrypted", NS_PUSH_ENCRYPT))
            .expect("encrypted payload");
        let iv: [u8; 12] = b64
            .decode(enc.attr("iv").expect("iv"))
            .expect("iv base64")
            .try_into()
            .expect("12-byte iv");
        let mut data = b64.decode(enc.text()).expect("payload base64");
        let k = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).expect("key"));
        let plain = k
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut data)
            .expect("decrypts with the device key");
        let json: serde_json::Value = serde_json::from_slice(plain).expect("json");
        assert_eq!(json["sender"], "bob@example.com");
        assert_eq!(json["message"], "the secret plan");
        assert_eq!(json["type"], "chat");
        // A call is a VoIP push naming the media.
        let call = parse("<message xmlns='jabber:client' from='bob@example.com/x'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>");
        let iq = notification("alice@example.com", "id2", &reg, &call);
        assert!(
            String::from(&iq).contains("type=\"voip\"")
                || String::from(&iq).contains("type='voip'")
        );
        assert_eq!(push_payload(&call)["media"], serde_json::json!(["audio"]));
        // Bad keys and algorithms are refused at enable time.
        let enable = |inner: &str| {
            parse(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'>{inner}</enable>"
            ))
        };
        assert_eq!(encryption_key(&enable("")), Ok(None));
        assert!(encryption_key(&enable(
            "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'>AAAA</encrypt>"
        ))
        .is_err());
        assert!(encryption_key(&enable("<encrypt xmlns='tigase:push:encrypt:0' alg='aes-256-cbc'>BwcHBwcHBwcHBwcHBwcHBw==</encrypt>")).is_err());
        assert_eq!(
            encryption_key(&enable("<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'>BwcHBwcHBwcHBwcHBwcHBw==</encrypt>")),
            Ok(Some("BwcHBwcHBwcHBwcHBwcHBw==".into()))
        );
    }

    #[test]
    fn only_tigase_filters_are_kept_from_an_enable() {
        let enable = parse(
            "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'>\
             <muted xmlns='tigase:push:filter:muted:0'><item jid='spam@example.net'/></muted>\
             <groupchat xmlns='tigase:push:filter:groupchat:0'><room jid='r@groups.example.com' allow='mentioned' nick='al'/></groupchat>\
             <other xmlns='urn:x'/></enable>",
        );
        let kept = filters_of(&enable).expect("filters");
        assert!(
            kept.contains("spam@example.net") && kept.contains("allow=") && !kept.contains("other")
        );
        assert_eq!(
            filters_of(&parse("<enable xmlns='urn:xmpp:push:0'/>")),
            Ok(String::new())
        );
        assert_eq!(
            bare_lower("Room@Groups.Example.com/nick"),
            "room@groups.example.com"
        );
    }
}
