//! Circle group chats on `groups.DOMAIN` (XEP-0045, the subset circle chats use).
//!
//! Every room is a chat an admin attached to a circle (spec 4.3, 3.5): persistent, hidden,
//! members-only and non-anonymous, its member list being the circle's members. Occupants live in
//! memory; a message is reflected to every occupant with a room stanza id and kept in a short
//! in-memory history that joiners receive. Rooms are not created by clients, nicknames are not
//! reserved, there is no moderation, and the history does not survive a restart (no MUC archive).

use crate::routing::Sender;
use crate::state::{lock, State};
use crate::xml::{self, el, NS_CLIENT};
use minidom::Element;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// `http://jabber.org/protocol/muc`.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
use crate::xml::NS_DATA;
const NS_DELAY: &str = "urn:xmpp:delay";
const NS_SID: &str = "urn:xmpp:sid:0";
/// Messages a joiner gets as history at most.
const HISTORY: usize = 20;
/// Longest nickname accepted, in bytes.
const MAX_NICK: usize = 100;

/// One occupant: the session behind a nickname.
#[derive(Debug, Clone)]
struct Occupant {
    username: String,
    resource: String,
    full: String,
    /// The last presence it sent to the room (its payload is shown to others).
    presence: Element,
}

#[derive(Debug, Default)]
struct Room {
    /// Nickname → occupant.
    occupants: HashMap<String, Occupant>,
    /// Recent messages as reflected (without `to`), with their time.
    history: VecDeque<(Element, String)>,
}

/// The rooms with occupants, by room address (`id@groups.DOMAIN`).
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
}

/// Where a stanza for `groups.DOMAIN` points.
#[derive(Debug, PartialEq, Eq)]
pub struct Address {
    /// `id@groups.DOMAIN`, or `None` for the service itself.
    pub room: Option<String>,
    /// The occupant's nickname.
    pub nick: Option<String>,
}

/// The service's disco#info.
fn service_info(state: &State) -> Element {
    let name = format!("{} group chats", state.config.site_name);
    el(
        "query",
        NS_DISCO_INFO,
        &[],
        vec![
            el(
                "identity",
                NS_DISCO_INFO,
                &[
                    ("category", "conference"),
                    ("type", "text"),
                    ("name", &name),
                ],
                vec![],
            ),
            feature(NS_DISCO_INFO),
            feature(NS_DISCO_ITEMS),
            feature(NS_MUC),
        ],
    )
}

fn feature(var: &str) -> Element {
    el("feature", NS_DISCO_INFO, &[("var", var)], vec![])
}

/// A room's disco#info: what Conversations and Dino check before they offer OMEMO (members-only
/// and non-anonymous), plus the room name form.
fn room_info(name: &str) -> Element {
    let mut children = vec![el(
        "identity",
        NS_DISCO_INFO,
        &[("category", "conference"), ("type", "text"), ("name", name)],
        vec![],
    )];
    for f in [
        NS_DISCO_INFO,
        NS_MUC,
        NS_SID,
        "muc_membersonly",
        "muc_persistent",
        "muc_hidden",
        "muc_nonanonymous",
        "muc_unmoderated",
        "muc_unsecured",
    ] {
        children.push(feature(f));
    }
    let field = xml::form_field;
    children.push(el(
        "x",
        NS_DATA,
        &[("type", "result")],
        vec![
            field(
                "FORM_TYPE",
                Some("hidden"),
                "http://jabber.org/protocol/muc#roominfo",
            ),
            field("muc#roomconfig_roomname", None, name),
        ],
    ));
    el("query", NS_DISCO_INFO, &[], children)
}

/// The room's circle and chat name, if `room` is a circle chat.
async fn room_of(state: &State, room: &str) -> Option<(String, String)> {
    match state.store.chat_circle(room).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "looking up a circle chat failed");
            None
        }
    }
}

/// Whether `username` is a member of the room's circle.
async fn is_member(state: &State, circle_id: &str, username: &str) -> bool {
    match state.store.circle_members(circle_id).await {
        Ok(m) => m.iter().any(|u| u == username),
        Err(e) => {
            tracing::warn!(error = %e, "looking up circle members failed");
            false
        }
    }
}

/// `<x xmlns='…muc#user'><item …/>[status codes]</x>` for an occupant.
fn user_x(full: &str, role: &str, codes: &[&str]) -> Element {
    let affiliation = "member";
    let mut children = vec![el(
        "item",
        NS_MUC_USER,
        &[("affiliation", affiliation), ("role", role), ("jid", full)],
        vec![],
    )];
    for code in codes {
        children.push(el("status", NS_MUC_USER, &[("code", code)], vec![]));
    }
    el("x", NS_MUC_USER, &[], children)
}

/// An occupant's presence as the room shows it to `to`.
fn occupant_presence(room: &str, nick: &str, o: &Occupant, to: &str, codes: &[&str]) -> Element {
    let unavailable = o.presence.attr("type") == Some("unavailable");
    let mut p = el(
        "presence",
        NS_CLIENT,
        &[("from", &format!("{room}/{nick}")), ("to", to)],
        vec![],
    );
    if unavailable {
        xml::set_attr(&mut p, "type", "unavailable");
    }
    for c in o.presence.children() {
        if !c.is("x", NS_MUC) && !c.is("x", NS_MUC_USER) {
            p.append_child(c.clone());
        }
    }
    let role = if unavailable { "none" } else { "participant" };
    p.append_child(user_x(&o.full, role, codes));
    p
}

fn send(state: &State, o: &Occupant, stanza: Element) {
    state.router.to_resource(&o.username, &o.resource, stanza);
}

/// Stanzas from a local client to `groups.DOMAIN` or one of its rooms; returns replies for the
/// sender's own stream.
pub async fn from_client(
    state: &State,
    me: &Sender,
    addr: Address,
    stanza: Element,
) -> Vec<Element> {
    match stanza.name() {
        "presence" => presence(state, me, addr, stanza).await,
        "message" => message(state, me, addr, stanza),
        "iq" => iq(state, me, addr, &stanza).await,
        _ => Vec::new(),
    }
}

async fn iq(state: &State, me: &Sender, addr: Address, iq: &Element) -> Vec<Element> {
    let kind = iq.attr("type").unwrap_or("");
    if !matches!(kind, "get" | "set") {
        return Vec::new();
    }
    let payload = xml::payload(iq);
    let is = |name: &str, ns: &str| payload.is_some_and(|p| p.is(name, ns));
    let get = kind == "get";
    let Some(room) = addr.room else {
        return vec![if get && is("query", NS_DISCO_INFO) {
            xml::iq_result(iq, Some(service_info(state)))
        } else if get && is("query", NS_DISCO_ITEMS) {
            // Circle chats are hidden rooms: not listed.
            xml::iq_result(iq, Some(el("query", NS_DISCO_ITEMS, &[], vec![])))
        } else if get && is("ping", "urn:xmpp:ping") {
            xml::iq_result(iq, None)
        } else {
            xml::error_reply(iq, "service-unavailable", None)
        }];
    };
    if addr.nick.is_some() {
        // IQs to occupants (vCards, pings) are not relayed.
        return vec![xml::error_reply(iq, "service-unavailable", None)];
    }
    let Some((circle_id, name)) = room_of(state, &room).await else {
        return vec![xml::error_reply(iq, "item-not-found", None)];
    };
    if get && is("query", NS_DISCO_INFO) {
        return vec![xml::iq_result(iq, Some(room_info(&name)))];
    }
    if get && is("query", NS_DISCO_ITEMS) {
        return vec![xml::iq_result(
            iq,
            Some(el("query", NS_DISCO_ITEMS, &[], vec![])),
        )];
    }
    if get && is("query", NS_MUC_ADMIN) {
        if !is_member(state, &circle_id, &me.username).await {
            return vec![xml::error_reply(iq, "forbidden", None)];
        }
        let wanted = payload
            .and_then(|p| p.get_child("item", NS_MUC_ADMIN))
            .and_then(|i| i.attr("affiliation"))
            .unwrap_or("");
        let items = match wanted {
            "member" => match state.store.circle_members(&circle_id).await {
                Ok(m) => m
                    .iter()
                    .map(|u| {
                        let jid = format!("{u}@{}", state.config.domain.ascii);
                        el(
                            "item",
                            NS_MUC_ADMIN,
                            &[("affiliation", "member"), ("jid", &jid)],
                            vec![],
                        )
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "listing circle members failed");
                    return vec![xml::error_reply(iq, "internal-server-error", None)];
                }
            },
            "owner" | "admin" | "outcast" => Vec::new(),
            _ => return vec![xml::error_reply(iq, "bad-request", None)],
        };
        return vec![xml::iq_result(
            iq,
            Some(el("query", NS_MUC_ADMIN, &[], items)),
        )];
    }
    vec![xml::error_reply(iq, "feature-not-implemented", None)]
}

/// The nickname `me` uses in `room`, if it is an occupant.
fn nick_of(room: &Room, me: &Sender) -> Option<String> {
    room.occupants
        .iter()
        .find(|(_, o)| o.full == me.full)
        .map(|(n, _)| n.clone())
}

async fn presence(state: &State, me: &Sender, addr: Address, stanza: Element) -> Vec<Element> {
    let kind = stanza.attr("type").unwrap_or("");
    let (Some(room), Some(nick)) = (addr.room, addr.nick) else {
        return Vec::new();
    };
    match kind {
        "" => join_or_update(state, me, &room, &nick, stanza).await,
        "unavailable" => {
            leave(state, &room, &me.full, Some(stanza));
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn presence_error(stanza: &Element, condition: &str, text: Option<&str>) -> Vec<Element> {
    let mut reply = xml::error_reply(stanza, condition, text);
    reply.append_child(el("x", NS_MUC, &[], vec![]));
    vec![reply]
}

async fn join_or_update(
    state: &State,
    me: &Sender,
    room: &str,
    nick: &str,
    stanza: Element,
) -> Vec<Element> {
    if nick.is_empty() || nick.len() > MAX_NICK {
        return presence_error(&stanza, "jid-malformed", None);
    }
    let Some((circle_id, _)) = room_of(state, room).await else {
        return presence_error(&stanza, "item-not-found", None);
    };
    if !is_member(state, &circle_id, &me.username).await {
        return presence_error(
            &stanza,
            "registration-required",
            Some("Only members of this circle can join"),
        );
    }
    let max_history = stanza
        .get_child("x", NS_MUC)
        .and_then(|x| x.get_child("history", NS_MUC))
        .and_then(|h| h.attr("maxstanzas"))
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(HISTORY)
        .min(HISTORY);
    let me_occupant = Occupant {
        username: me.username.clone(),
        resource: me.resource.clone(),
        full: me.full.clone(),
        presence: stanza,
    };
    let mut rooms = lock(&state.muc.rooms);
    let r = rooms.entry(room.to_string()).or_default();
    if let Some(other) = r.occupants.get(nick) {
        if other.username != me.username {
            let err = presence_error(
                &me_occupant.presence,
                "conflict",
                Some("That nickname is already in use"),
            );
            if r.occupants.is_empty() {
                rooms.remove(room);
            }
            return err;
        }
    }
    let previous = nick_of(r, me);
    let joining = previous.is_none();
    if let Some(old) = previous.filter(|old| old != nick) {
        // A nickname change, done as leaving and joining again.
        if let Some(mut o) = r.occupants.remove(&old) {
            xml::set_attr(&mut o.presence, "type", "unavailable");
            for other in r.occupants.values() {
                send(
                    state,
                    other,
                    occupant_presence(room, &old, &o, &other.full, &[]),
                );
            }
        }
    }
    // Someone else of the same account may hold the nickname: that session is replaced.
    r.occupants.insert(nick.to_string(), me_occupant.clone());
    if joining {
        for (n, o) in r.occupants.iter().filter(|(n, _)| n.as_str() != nick) {
            send(
                state,
                &me_occupant,
                occupant_presence(room, n, o, &me.full, &[]),
            );
        }
    }
    for o in r.occupants.values().filter(|o| o.full != me.full) {
        send(
            state,
            o,
            occupant_presence(room, nick, &me_occupant, &o.full, &[]),
        );
    }
    send(
        state,
        &me_occupant,
        occupant_presence(room, nick, &me_occupant, &me.full, &["110", "100"]),
    );
    if joining {
        let skip = r.history.len().saturating_sub(max_history);
        for (m, stamp) in r.history.iter().skip(skip) {
            let mut m = m.clone();
            xml::set_attr(&mut m, "to", &me.full);
            m.append_child(el(
                "delay",
                NS_DELAY,
                &[("from", room), ("stamp", stamp)],
                vec![],
            ));
            send(state, &me_occupant, m);
        }
        // The subject comes last: clients take it as the end of the join.
        let subject = el(
            "message",
            NS_CLIENT,
            &[("from", room), ("to", &me.full), ("type", "groupchat")],
            vec![el("subject", NS_CLIENT, &[], vec![])],
        );
        send(state, &me_occupant, subject);
        tracing::debug!(room, user = %me.username, "joined a circle chat");
    }
    Vec::new()
}

/// `full` leaves `room` (an unavailable presence, or its session ended).
fn leave(state: &State, room: &str, full: &str, stanza: Option<Element>) {
    let mut rooms = lock(&state.muc.rooms);
    let Some(r) = rooms.get_mut(room) else {
        return;
    };
    let Some(nick) = r
        .occupants
        .iter()
        .find(|(_, o)| o.full == full)
        .map(|(n, _)| n.clone())
    else {
        return;
    };
    let Some(mut o) = r.occupants.remove(&nick) else {
        return;
    };
    o.presence = stanza.unwrap_or_else(|| el("presence", NS_CLIENT, &[], vec![]));
    xml::set_attr(&mut o.presence, "type", "unavailable");
    for other in r.occupants.values() {
        send(
            state,
            other,
            occupant_presence(room, &nick, &o, &other.full, &[]),
        );
    }
    send(
        state,
        &o,
        occupant_presence(room, &nick, &o, full, &["110"]),
    );
    if r.occupants.is_empty() && r.history.is_empty() {
        rooms.remove(room);
    }
}

/// A session ended or went unavailable: it leaves every room it was in.
pub fn session_ended(state: &State, full: &str) {
    let joined: Vec<String> = lock(&state.muc.rooms)
        .iter()
        .filter(|(_, r)| r.occupants.values().any(|o| o.full == full))
        .map(|(k, _)| k.clone())
        .collect();
    for room in joined {
        leave(state, &room, full, None);
    }
}

fn message(state: &State, me: &Sender, addr: Address, mut stanza: Element) -> Vec<Element> {
    let kind = stanza.attr("type").unwrap_or("normal").to_string();
    if kind == "error" {
        return Vec::new();
    }
    let Some(room) = addr.room else {
        return vec![xml::error_reply(&stanza, "service-unavailable", None)];
    };
    let mut rooms = lock(&state.muc.rooms);
    let Some(r) = rooms.get_mut(&room) else {
        return vec![xml::error_reply(
            &stanza,
            "not-acceptable",
            Some("Only occupants may send messages to this room"),
        )];
    };
    let Some(nick) = nick_of(r, me) else {
        return vec![xml::error_reply(
            &stanza,
            "not-acceptable",
            Some("Only occupants may send messages to this room"),
        )];
    };
    let from = format!("{room}/{nick}");
    if let Some(to_nick) = addr.nick {
        // A private message to one occupant.
        let Some(target) = r.occupants.get(&to_nick) else {
            return vec![xml::error_reply(&stanza, "item-not-found", None)];
        };
        xml::set_attr(&mut stanza, "from", &from);
        xml::set_attr(&mut stanza, "to", &target.full);
        stanza.append_child(el("x", NS_MUC_USER, &[], vec![]));
        send(state, target, stanza);
        return Vec::new();
    }
    if kind != "groupchat" {
        return vec![xml::error_reply(&stanza, "bad-request", None)];
    }
    if stanza.get_child("subject", NS_CLIENT).is_some() {
        return vec![xml::error_reply(
            &stanza,
            "forbidden",
            Some("The subject of a circle chat cannot be changed"),
        )];
    }
    xml::set_attr(&mut stanza, "from", &from);
    xml::remove_attr(&mut stanza, "to");
    stanza.append_child(el(
        "stanza-id",
        NS_SID,
        &[("id", &crate::archive::new_archive_id()), ("by", &room)],
        vec![],
    ));
    for o in r.occupants.values() {
        let mut copy = stanza.clone();
        xml::set_attr(&mut copy, "to", &o.full);
        send(state, o, copy);
    }
    let has_body = stanza.get_child("body", NS_CLIENT).is_some()
        || stanza.children().any(|c| c.name() == "encrypted");
    if has_body {
        let stamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        r.history.push_back((stanza, stamp));
        while r.history.len() > HISTORY {
            r.history.pop_front();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::text_el;

    #[test]
    fn room_info_says_what_omemo_clients_look_for() {
        let info = room_info("Family");
        let features: Vec<&str> = info
            .children()
            .filter(|c| c.name() == "feature")
            .filter_map(|c| c.attr("var"))
            .collect();
        for f in [
            NS_MUC,
            "muc_membersonly",
            "muc_nonanonymous",
            "muc_persistent",
            "muc_hidden",
        ] {
            assert!(features.contains(&f), "{f}");
        }
        let identity = info.get_child("identity", NS_DISCO_INFO).unwrap();
        assert_eq!(identity.attr("name"), Some("Family"));
    }

    #[test]
    fn occupant_presence_carries_the_real_jid_and_status_codes() {
        let o = Occupant {
            username: "ann".into(),
            resource: "phone".into(),
            full: "ann@example.com/phone".into(),
            presence: el(
                "presence",
                NS_CLIENT,
                &[],
                vec![
                    text_el("show", NS_CLIENT, "away"),
                    el("x", NS_MUC, &[], vec![]),
                ],
            ),
        };
        let p = occupant_presence(
            "r@groups.example.com",
            "Ann",
            &o,
            "ann@example.com/phone",
            &["110", "100"],
        );
        assert_eq!(p.attr("from"), Some("r@groups.example.com/Ann"));
        assert_eq!(p.attr("type"), None);
        assert!(p.get_child("show", NS_CLIENT).is_some());
        assert!(p.get_child("x", NS_MUC).is_none());
        let x = p.get_child("x", NS_MUC_USER).unwrap();
        let item = x.get_child("item", NS_MUC_USER).unwrap();
        assert_eq!(item.attr("jid"), Some("ann@example.com/phone"));
        assert_eq!(item.attr("role"), Some("participant"));
        let codes: Vec<&str> = x
            .children()
            .filter(|c| c.name() == "status")
            .filter_map(|c| c.attr("code"))
            .collect();
        assert_eq!(codes, ["110", "100"]);
    }
}
