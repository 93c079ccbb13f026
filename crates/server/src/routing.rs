//! What happens to a stanza a client sent: local IQ handling, message and presence delivery
//! (RFC 6121 §8), subscriptions (RFC 6121 §3) and offline storage (XEP-0160).

use crate::modules;
use crate::state::State;
use crate::xml::{self, el, NS_CLIENT};
use minidom::Element;
use snikket_store::{RosterItem, Subscription};
use std::collections::HashSet;

/// The authenticated sender of a client stanza.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Account localpart.
    pub username: String,
    /// Bound resource.
    pub resource: String,
    /// `user@domain`.
    pub bare: String,
    /// `user@domain/resource`.
    pub full: String,
}

impl Sender {
    /// Builds the addresses of a session.
    pub fn new(username: &str, resource: &str, domain: &str) -> Self {
        let bare = format!("{username}@{domain}");
        Sender {
            username: username.into(),
            resource: resource.into(),
            full: format!("{bare}/{resource}"),
            bare,
        }
    }
}

/// Where a `to` address points.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Our domain itself.
    Server,
    /// A local account (`resource` for full JIDs).
    Local {
        username: String,
        resource: Option<String>,
    },
    /// The file sharing service, `share.DOMAIN`.
    Share,
    /// Another domain.
    Remote(String),
    /// Not a valid address.
    Invalid,
}

/// Classifies an address.
pub fn target(state: &State, to: &str) -> Target {
    let Ok(jid) = jid::Jid::new(to) else {
        return Target::Invalid;
    };
    let domain = jid.domain().as_str();
    if subdomain(domain, "share", &state.config.domain.ascii) {
        return match jid.node() {
            None => Target::Share,
            Some(_) => Target::Invalid,
        };
    }
    if domain != state.config.domain.ascii {
        return Target::Remote(domain.to_string());
    }
    match jid.node() {
        None => Target::Server,
        Some(node) => Target::Local {
            username: node.as_str().to_string(),
            resource: jid.resource().map(|r| r.as_str().to_string()),
        },
    }
}

/// The group chat address `to` names, if it is on `groups.DOMAIN`.
pub(crate) fn groups_address(state: &State, to: &str) -> Option<crate::muc::Address> {
    // Runs for every stanza with a `to`: most are not for group chats, so they are passed over
    // without parsing the address or building the domain name.
    if !to
        .as_bytes()
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"groups."))
    {
        return None;
    }
    let jid = jid::Jid::new(to).ok()?;
    let ascii = &state.config.domain.ascii;
    if !subdomain(jid.domain().as_str(), "groups", ascii) {
        return None;
    }
    let groups = jid.domain().as_str();
    Some(crate::muc::Address {
        room: jid.node().map(|n| format!("{}@{groups}", n.as_str())),
        nick: jid.resource().map(|r| r.as_str().to_string()),
    })
}

/// Whether `domain` is `<label>.<ascii>` (compared without building that string).
fn subdomain(domain: &str, label: &str, ascii: &str) -> bool {
    domain
        .strip_prefix(label)
        .and_then(|rest| rest.strip_prefix('.'))
        == Some(ascii)
}

/// `http://jabber.org/protocol/commands` (XEP-0050).
const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";

/// Whether a client's stanza may leave for another domain: limited users may only answer, and
/// (un)register with push services (spec 4.1, `mod_restrict_federation`).
async fn may_federate(state: &State, me: &Sender, stanza: &Element) -> bool {
    if stanza.name() == "iq" {
        if matches!(stanza.attr("type"), Some("result" | "error")) {
            return true;
        }
        let push_command = xml::payload(stanza).is_some_and(|p| {
            p.is("command", NS_COMMANDS)
                && p.attr("node")
                    .is_some_and(|n| n.starts_with("register-") || n.starts_with("unregister-"))
        });
        if push_command {
            return true;
        }
    }
    match state.store.account(&me.username).await {
        Ok(Some(a)) => a.role != snikket_store::Role::Limited,
        Ok(None) => false,
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            false
        }
    }
}

/// The refusal a limited user gets for a stanza to another domain.
fn federation_refusal(stanza: &Element) -> Element {
    xml::error_reply(
        stanza,
        "policy-violation",
        Some("Communication with remote domains is not permitted"),
    )
}

/// Sends a client's stanza to another domain, if the user may federate.
async fn to_remote(state: &State, me: &Sender, stanza: Element) -> Vec<Element> {
    if !may_federate(state, me, &stanza).await {
        return vec![federation_refusal(&stanza)];
    }
    crate::s2s::send(state, stanza).await;
    Vec::new()
}

/// The bare form of an address (the address itself when it does not parse).
fn bare_of(addr: &str) -> String {
    jid::Jid::new(addr)
        .map(|j| j.to_bare().to_string())
        .unwrap_or_else(|_| addr.to_string())
}

/// `urn:xmpp:carbons:2`.
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";

/// Whether a message is copied by Message Carbons (XEP-0280 §6): chat messages that did not ask
/// to stay private.
fn carbon_eligible(stanza: &Element) -> bool {
    stanza.attr("type") == Some("chat")
        && !stanza.has_child("private", NS_CARBONS)
        && !stanza.has_child("no-copy", xml::NS_HINTS)
        && !stanza.has_child("received", NS_CARBONS)
        && !stanza.has_child("sent", NS_CARBONS)
}

/// `<message><sent|received><forwarded>original</forwarded></…></message>` for one resource.
fn carbon(kind: &str, bare: &str, to_full: &str, original: &Element) -> Element {
    let forwarded = el("forwarded", xml::NS_FORWARD, &[], vec![original.clone()]);
    el(
        "message",
        NS_CLIENT,
        &[("from", bare), ("to", to_full), ("type", "chat")],
        vec![el(kind, NS_CARBONS, &[], vec![forwarded])],
    )
}

/// Handles one stanza from a client; returns replies for that client's own stream.
pub async fn from_client(state: &State, me: &Sender, stanza: Element) -> Vec<Element> {
    if let Some(replies) = crate::blocking::gate(state, me, &stanza).await {
        return replies;
    }
    if let Some(addr) = stanza.attr("to").and_then(|to| groups_address(state, to)) {
        return crate::muc::from_client(state, me, addr, stanza).await;
    }
    match stanza.name() {
        "iq" => iq(state, me, stanza).await,
        "message" => message(state, me, stanza).await,
        "presence" => presence(state, me, stanza).await,
        _ => Vec::new(),
    }
}

async fn iq(state: &State, me: &Sender, stanza: Element) -> Vec<Element> {
    let kind = stanza.attr("type").unwrap_or("");
    if !matches!(kind, "get" | "set" | "result" | "error") || stanza.attr("id").is_none() {
        return vec![xml::error_reply(&stanza, "bad-request", None)];
    }
    let to = stanza.attr("to").map(str::to_string);
    let target = match &to {
        None => Target::Local {
            username: me.username.clone(),
            resource: None,
        },
        Some(t) => target(state, t),
    };
    match target {
        Target::Invalid => vec![xml::error_reply(&stanza, "jid-malformed", None)],
        Target::Remote(_) => to_remote(state, me, stanza).await,
        Target::Share if matches!(kind, "get" | "set") => {
            vec![crate::upload::iq(state, me, &stanza).await]
        }
        Target::Share => Vec::new(),
        Target::Local {
            username,
            resource: Some(resource),
        } => {
            if !state
                .router
                .to_resource(&username, &resource, stanza.clone())
                && matches!(kind, "get" | "set")
            {
                return vec![xml::error_reply(&stanza, "service-unavailable", None)];
            }
            Vec::new()
        }
        Target::Server | Target::Local { resource: None, .. }
            if matches!(kind, "result" | "error") =>
        {
            if !crate::push::iq_response(state, me, &stanza).await {
                crate::pep::iq_response(state, me, &stanza).await;
            }
            Vec::new()
        }
        _ if kind == "set"
            && xml::payload(&stanza).is_some_and(|p| p.is("query", crate::archive::NS_MAM))
            && matches!(
                &target,
                Target::Server | Target::Local { resource: None, .. }
            )
            && target_is_self(&target, me) =>
        {
            crate::archive::query(state, me, &stanza).await
        }
        Target::Server => vec![modules::server_iq(state, me, &stanza).await],
        Target::Local {
            username,
            resource: None,
        } => {
            if username == me.username {
                vec![modules::account_iq(state, me, &stanza).await]
            } else {
                vec![modules::contact_iq(state, me, &username, &stanza).await]
            }
        }
    }
}

fn target_is_self(target: &Target, me: &Sender) -> bool {
    match target {
        Target::Local {
            username,
            resource: None,
        } => username == &me.username,
        _ => false,
    }
}

async fn message(state: &State, me: &Sender, mut stanza: Element) -> Vec<Element> {
    crate::archive::strip_stanza_ids(&mut stanza);
    let kind = stanza.attr("type").unwrap_or("normal").to_string();
    let Some(to) = stanza.attr("to").map(str::to_string) else {
        return Vec::new();
    };
    let copy = carbon_eligible(&stanza).then(|| stanza.clone());
    let target = target(state, &to);
    if matches!(target, Target::Remote(_)) && !may_federate(state, me, &stanza).await {
        return vec![federation_refusal(&stanza)];
    }
    // The sender's own archive copy is written alongside the delivery (which waits for the
    // recipient's copy), so a message costs one archive commit of latency, not two; like
    // Prosody, the sender's copy is kept even if delivery then fails.
    let with = match &target {
        Target::Local { username, .. } => Some(format!("{username}@{}", state.config.domain.ascii)),
        Target::Remote(_) => Some(bare_of(&to)),
        _ => None,
    }
    .filter(|_| crate::archive::archivable(&stanza));
    let own = with.as_ref().map(|_| stanza.clone());
    let deliver = async {
        match target {
            Target::Invalid => vec![xml::error_reply(&stanza, "jid-malformed", None)],
            Target::Remote(_) => {
                crate::s2s::send(state, stanza).await;
                Vec::new()
            }
            Target::Share if kind != "error" => {
                vec![xml::error_reply(&stanza, "service-unavailable", None)]
            }
            Target::Server | Target::Share => Vec::new(),
            Target::Local { username, resource } => {
                deliver_message(state, &username, resource.as_deref(), &kind, stanza).await
            }
        }
    };
    let archive_own = async {
        if let (Some(with), Some(mut own)) = (with, own) {
            crate::archive::archive_for(state, &me.username, &with, &mut own).await;
        }
    };
    let (replies, ()) = tokio::join!(deliver, archive_own);
    if let Some(original) = copy.filter(|_| replies.is_empty()) {
        state.router.to_carbons(&me.username, &[&me.resource], |r| {
            carbon("sent", &me.bare, &format!("{}/{r}", me.bare), &original)
        });
    }
    replies
}

/// Whether `username` is an account here: a session proves it without asking the database.
async fn account_exists(state: &State, username: &str) -> Result<bool, snikket_store::StoreError> {
    if state.router.session_count(username) > 0 {
        return Ok(true);
    }
    Ok(state.store.account(username).await?.is_some())
}

/// Delivers a message to a local account (RFC 6121 §8.5), storing it offline when nobody can
/// take it. Returns error replies for the sender.
pub async fn deliver_message(
    state: &State,
    username: &str,
    resource: Option<&str>,
    kind: &str,
    mut stanza: Element,
) -> Vec<Element> {
    // Looked up at most once: a message to an online user needs no database read at all.
    let mut exists = None;
    if crate::archive::archivable(&stanza) {
        exists = account_exists(state, username).await.ok();
    }
    if exists == Some(true) {
        let with = stanza
            .attr("from")
            .and_then(|f| jid::Jid::new(f).ok())
            .map(|j| j.to_bare().to_string())
            .unwrap_or_default();
        // Stored before it is delivered: what a client saw is always in the archive.
        if !crate::archive::archive_for(state, username, &with, &mut stanza).await {
            return vec![xml::error_reply(&stanza, "internal-server-error", None)];
        }
    }
    let bare = format!("{username}@{}", state.config.domain.ascii);
    if let Some(r) = resource {
        if state.router.to_resource(username, r, stanza.clone()) {
            if carbon_eligible(&stanza) {
                state.router.to_carbons(username, &[r], |other| {
                    carbon("received", &bare, &format!("{bare}/{other}"), &stanza)
                });
            }
            return Vec::new();
        }
        if !matches!(kind, "chat" | "normal") {
            // Groupchat and headline to an unavailable full JID are dropped; errors too.
            return Vec::new();
        }
    }
    if kind == "error" {
        return Vec::new();
    }
    let exists = match exists {
        Some(known) => Ok(known),
        None => account_exists(state, username).await,
    };
    match exists {
        Ok(true) => {}
        Ok(false) => return vec![xml::error_reply(&stanza, "service-unavailable", None)],
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            return vec![xml::error_reply(&stanza, "internal-server-error", None)];
        }
    }
    if kind == "groupchat" {
        return vec![xml::error_reply(&stanza, "service-unavailable", None)];
    }
    if state.router.to_available(username, &stanza) > 0 {
        if carbon_eligible(&stanza) {
            let reached = state.router.available_resources(username);
            let except: Vec<&str> = reached.iter().map(String::as_str).collect();
            state.router.to_carbons(username, &except, |other| {
                carbon("received", &bare, &format!("{bare}/{other}"), &stanza)
            });
        }
        return Vec::new();
    }
    if kind == "headline" {
        return Vec::new();
    }
    let has_content = stanza
        .children()
        .any(|c| c.name() == "body" || c.name() == "encrypted");
    if !has_content {
        return Vec::new();
    }
    let text = match snikket_xmpp::framing::writer::element_to_bytes(&stanza) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => return Vec::new(),
    };
    if let Err(e) = state.store.store_offline(username, &text).await {
        tracing::error!(error = %e, "storing offline message failed");
        return vec![xml::error_reply(&stanza, "internal-server-error", None)];
    }
    crate::push::offline(state, username, &stanza).await;
    Vec::new()
}

pub(crate) fn presence_el(kind: Option<&str>, from: &str, to: &str) -> Element {
    let mut p = el("presence", NS_CLIENT, &[("from", from), ("to", to)], vec![]);
    if let Some(k) = kind {
        xml::set_attr(&mut p, "type", k);
    }
    p
}

pub(crate) fn readdress(p: &Element, to: &str) -> Element {
    let mut c = p.clone();
    xml::set_attr(&mut c, "to", to);
    c
}

async fn presence(state: &State, me: &Sender, stanza: Element) -> Vec<Element> {
    let kind = stanza.attr("type").map(str::to_string);
    match (kind.as_deref(), stanza.attr("to").map(str::to_string)) {
        (None, None) => {
            let stanza = crate::vcard::with_photo_hash(state, &me.username, stanza).await;
            broadcast(state, me, &stanza, true).await;
            Vec::new()
        }
        (Some("unavailable"), None) => {
            crate::muc::session_ended(state, &me.full).await;
            broadcast(state, me, &stanza, false).await;
            Vec::new()
        }
        (Some(k @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")), Some(to)) => {
            subscription(state, me, k, &to, &stanza).await
        }
        (Some("probe"), _) | (Some("error"), None) => Vec::new(),
        (_, Some(to)) => {
            // Directed presence.
            match target(state, &to) {
                Target::Local {
                    username,
                    resource: Some(r),
                } => {
                    state.router.to_resource(&username, &r, stanza);
                }
                Target::Local { username, .. } => {
                    state.router.to_present(&username, &stanza, None);
                }
                Target::Remote(_) => return to_remote(state, me, stanza).await,
                _ => {}
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Broadcast of available or unavailable presence (RFC 6121 §4.2, §4.4–4.5).
async fn broadcast(state: &State, me: &Sender, stanza: &Element, available: bool) {
    let initial = available && !state.router.is_available(&me.username, &me.resource);
    state.router.set_presence(
        &me.username,
        &me.resource,
        available.then(|| stanza.clone()),
    );
    if !available {
        state.pep.session_ended(&me.full);
    }
    let roster = match state.store.roster_items(&me.username).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            Vec::new()
        }
    };
    let mut remote = Vec::new();
    for item in &roster {
        if !item.subscription.has_from() || blocked_either(state, me, &item.contact).await {
            continue;
        }
        match target(state, &item.contact) {
            Target::Local { username, .. } => {
                state
                    .router
                    .to_present(&username, &readdress(stanza, &item.contact), None);
            }
            Target::Remote(_) => remote.push(readdress(stanza, &item.contact)),
            _ => {}
        }
    }
    if initial {
        // Probes for the contacts on other domains we are subscribed to; their servers answer.
        for item in roster.iter().filter(|i| i.subscription.has_to()) {
            if matches!(target(state, &item.contact), Target::Remote(_))
                && !blocked_either(state, me, &item.contact).await
            {
                remote.push(presence_el(Some("probe"), &me.bare, &item.contact));
            }
        }
    }
    if !remote.is_empty() && may_federate(state, me, stanza).await {
        for p in remote {
            crate::s2s::send(state, p).await;
        }
    }
    // The user's other resources see it too.
    state.router.to_present(
        &me.username,
        &readdress(stanza, &me.bare),
        Some(&me.resource),
    );
    if initial {
        state.router.to_resource(
            &me.username,
            &me.resource,
            crate::vcard::server_photo_presence(&state.config.domain.ascii, &me.full),
        );
        // Probe: current presence of contacts we are subscribed to, and of our other resources.
        for item in roster.iter().filter(|i| i.subscription.has_to()) {
            if blocked_either(state, me, &item.contact).await {
                continue;
            }
            if let Target::Local { username, .. } = target(state, &item.contact) {
                for (_, p) in state.router.presences(&username) {
                    state
                        .router
                        .to_resource(&me.username, &me.resource, readdress(&p, &me.full));
                }
            }
        }
        for (r, p) in state.router.presences(&me.username) {
            if r != me.resource {
                state
                    .router
                    .to_resource(&me.username, &me.resource, readdress(&p, &me.full));
            }
        }
        // Pending inbound subscription requests are re-sent (RFC 6121 §3.1.3).
        for item in roster.iter().filter(|i| i.ask_in) {
            if blocked_either(state, me, &item.contact).await {
                continue;
            }
            state.router.to_resource(
                &me.username,
                &me.resource,
                presence_el(Some("subscribe"), &item.contact, &me.bare),
            );
        }
        deliver_offline(state, me).await;
    }
    if available {
        crate::pep::presence(state, me, stanza).await;
    }
}

/// Whether a blocklist stands between the user and a contact, in either direction.
async fn blocked_either(state: &State, me: &Sender, contact: &str) -> bool {
    crate::blocking::check(state, me, contact).await != crate::blocking::Blocked::No
}

/// Presence after a blocklist change (XEP-0191 §3.3, §3.4): local contacts allowed to see the
/// user's presence get unavailable presence when they become blocked and the current presence
/// when they are unblocked.
pub async fn presence_after_block(
    state: &State,
    me: &Sender,
    before: &HashSet<String>,
    after: &HashSet<String>,
) {
    let roster = match state.store.roster_items(&me.username).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            return;
        }
    };
    for item in roster.iter().filter(|i| i.subscription.has_from()) {
        let (Ok(contact), Target::Local { username, .. }) =
            (jid::Jid::new(&item.contact), target(state, &item.contact))
        else {
            continue;
        };
        let was = crate::blocking::matches(before, &contact);
        let hide = !was && crate::blocking::matches(after, &contact);
        let show = was && !blocked_either(state, me, &item.contact).await;
        if !hide && !show {
            continue;
        }
        for (resource, p) in state.router.presences(&me.username) {
            let update = if hide {
                let full = format!("{}/{resource}", me.bare);
                presence_el(Some("unavailable"), &full, &item.contact)
            } else {
                readdress(&p, &item.contact)
            };
            state.router.to_present(&username, &update, None);
        }
    }
}

async fn deliver_offline(state: &State, me: &Sender) {
    let msgs = match state.store.offline_messages(&me.username).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "offline load failed");
            return;
        }
    };
    let mut last = None;
    for (id, text) in msgs {
        match text.parse::<Element>() {
            Ok(mut m) => {
                let stamp = el(
                    "delay",
                    "urn:xmpp:delay",
                    &[("from", &state.config.domain.ascii)],
                    vec![],
                );
                m.append_child(stamp);
                if !state.router.to_resource(&me.username, &me.resource, m) {
                    break;
                }
            }
            Err(e) => tracing::warn!(error = %e, "dropping unreadable offline message"),
        }
        last = Some(id);
    }
    if let Some(id) = last {
        if let Err(e) = state.store.delete_offline(&me.username, id).await {
            tracing::error!(error = %e, "offline cleanup failed");
        }
    }
}

/// Roster push of one item to every session of `username` (RFC 6121 §2.1.6).
pub fn push_item(state: &State, username: &str, item: &RosterItem, version: i64, removed: bool) {
    let bare = format!("{username}@{}", state.config.domain.ascii);
    let push = el(
        "iq",
        NS_CLIENT,
        &[
            ("type", "set"),
            ("id", &format!("push{version}")),
            ("to", &bare),
        ],
        vec![el(
            "query",
            modules::NS_ROSTER,
            &[("ver", &version.to_string())],
            vec![modules::roster_item_el(item, removed)],
        )],
    );
    state.router.to_all(username, &push);
}

pub(crate) async fn update_item(
    state: &State,
    username: &str,
    contact: &str,
    f: impl FnOnce(&mut RosterItem),
) -> Option<RosterItem> {
    let mut item = match state.store.roster_item(username, contact).await {
        Ok(Some(i)) => i,
        Ok(None) => RosterItem::new(contact),
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            return None;
        }
    };
    let before = item.clone();
    f(&mut item);
    if item == before && before.subscription != Subscription::None {
        return Some(item);
    }
    match state.store.put_roster_item(username, &item).await {
        Ok(v) => {
            push_item(state, username, &item, v, false);
            Some(item)
        }
        Err(e) => {
            tracing::error!(error = %e, "roster save failed");
            None
        }
    }
}

/// Subscription handling between local users (RFC 6121 §3), simplified to the states both sides
/// keep in their rosters.
async fn subscription(
    state: &State,
    me: &Sender,
    kind: &str,
    to: &str,
    stanza: &Element,
) -> Vec<Element> {
    let Target::Local {
        username: contact_user,
        ..
    } = target(state, to)
    else {
        return match target(state, to) {
            Target::Remote(_) => remote_subscription(state, me, kind, to, stanza).await,
            _ => vec![xml::error_reply(stanza, "jid-malformed", None)],
        };
    };
    let contact = format!("{contact_user}@{}", state.config.domain.ascii);
    match state.store.account(&contact_user).await {
        Ok(Some(_)) => {}
        _ => return Vec::new(),
    }
    let forward = presence_el(Some(kind), &me.bare, &contact);
    match kind {
        "subscribe" => {
            update_item(state, &me.username, &contact, |i| {
                if !i.subscription.has_to() {
                    i.ask_out = true;
                }
            })
            .await;
            let theirs = update_item(state, &contact_user, &me.bare, |i| {
                if !i.subscription.has_from() {
                    i.ask_in = true;
                }
            })
            .await;
            if theirs.is_some_and(|i| i.subscription.has_from()) {
                // Already approved: answer for them.
                state.router.to_all(
                    &me.username,
                    &presence_el(Some("subscribed"), &contact, &me.bare),
                );
            } else {
                state.router.to_present(&contact_user, &forward, None);
            }
        }
        "subscribed" => {
            update_item(state, &me.username, &contact, |i| {
                i.subscription = i.subscription.with_from(true);
                i.ask_in = false;
            })
            .await;
            update_item(state, &contact_user, &me.bare, |i| {
                i.subscription = i.subscription.with_to(true);
                i.ask_out = false;
            })
            .await;
            state.router.to_present(&contact_user, &forward, None);
            for (_, p) in state.router.presences(&me.username) {
                state
                    .router
                    .to_present(&contact_user, &readdress(&p, &contact), None);
            }
        }
        "unsubscribe" => {
            update_item(state, &me.username, &contact, |i| {
                i.subscription = i.subscription.with_to(false);
                i.ask_out = false;
            })
            .await;
            update_item(state, &contact_user, &me.bare, |i| {
                i.subscription = i.subscription.with_from(false);
                i.ask_in = false;
            })
            .await;
            state.router.to_present(&contact_user, &forward, None);
        }
        "unsubscribed" => {
            update_item(state, &me.username, &contact, |i| {
                i.subscription = i.subscription.with_from(false);
                i.ask_in = false;
            })
            .await;
            update_item(state, &contact_user, &me.bare, |i| {
                i.subscription = i.subscription.with_to(false);
                i.ask_out = false;
            })
            .await;
            state.router.to_present(&contact_user, &forward, None);
            for r in state.router.present_resources(&me.username) {
                let gone = presence_el(Some("unavailable"), &format!("{}/{r}", me.bare), &contact);
                state.router.to_present(&contact_user, &gone, None);
            }
        }
        _ => {}
    }
    Vec::new()
}

/// Subscription handling with a contact on another domain: our side of the roster here, the
/// contact's on their server, which answers over federation (`s2s::inbound`).
async fn remote_subscription(
    state: &State,
    me: &Sender,
    kind: &str,
    to: &str,
    stanza: &Element,
) -> Vec<Element> {
    if !may_federate(state, me, stanza).await {
        return vec![federation_refusal(stanza)];
    }
    let contact = bare_of(to);
    update_item(state, &me.username, &contact, |i| match kind {
        "subscribe" => {
            if !i.subscription.has_to() {
                i.ask_out = true;
            }
        }
        "subscribed" => {
            i.subscription = i.subscription.with_from(true);
            i.ask_in = false;
        }
        "unsubscribe" => {
            i.subscription = i.subscription.with_to(false);
            i.ask_out = false;
        }
        _ => {
            i.subscription = i.subscription.with_from(false);
            i.ask_in = false;
        }
    })
    .await;
    crate::s2s::send(state, presence_el(Some(kind), &me.bare, &contact)).await;
    match kind {
        "subscribed" => {
            for (_, p) in state.router.presences(&me.username) {
                crate::s2s::send(state, readdress(&p, &contact)).await;
            }
        }
        "unsubscribed" => {
            for r in state.router.present_resources(&me.username) {
                let gone = presence_el(Some("unavailable"), &format!("{}/{r}", me.bare), &contact);
                crate::s2s::send(state, gone).await;
            }
        }
        _ => {}
    }
    Vec::new()
}

/// Cleans up after a session: unavailable presence if it was available, then unregisters.
pub async fn session_ended(state: &State, me: &Sender, session_id: u64) {
    let was_available = state.router.is_available(&me.username, &me.resource);
    if was_available {
        let p = presence_el(Some("unavailable"), &me.full, &me.bare);
        broadcast(state, me, &p, false).await;
    }
    state.pep.session_ended(&me.full);
    crate::muc::session_ended(state, &me.full).await;
    state
        .router
        .unregister(&me.username, &me.resource, session_id);
    state.activity.touch(&me.username);
}

/// Makes every member of the user's circles a mutual contact (spec 4.3), both ways, with the
/// circle name as roster group. Runs at every login; existing entries only gain what is missing.
pub async fn sync_circles(state: &State, username: &str) {
    let circles = match state.store.circles_of(username).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "circle lookup failed");
            return;
        }
    };
    let domain = &state.config.domain.ascii;
    let me = format!("{username}@{domain}");
    for circle_id in circles {
        crate::bookmarks::circle_chats(state, username, &circle_id).await;
        let (name, members) = match (
            state.store.circle(&circle_id).await,
            state.store.circle_members(&circle_id).await,
        ) {
            (Ok(Some(c)), Ok(m)) => (c.name, m),
            _ => continue,
        };
        for member in members.iter().filter(|m| m.as_str() != username) {
            let contact = format!("{member}@{domain}");
            for (owner, other) in [(username, &contact), (member.as_str(), &me)] {
                let group = name.clone();
                update_item(state, owner, other, |i| {
                    i.subscription = Subscription::Both;
                    i.ask_in = false;
                    i.ask_out = false;
                    if !i.groups.contains(&group) {
                        i.groups.push(group);
                    }
                })
                .await;
            }
        }
    }
}
