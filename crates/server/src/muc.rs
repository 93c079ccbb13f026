//! Group chats on `groups.DOMAIN` (XEP-0045).
//!
//! Two kinds of room:
//! - circle chats (spec 4.3): a chat an admin attached to a circle is a persistent, hidden,
//!   members-only, non-anonymous room whose members are the circle's members; nobody configures it;
//! - rooms people create by joining a room that does not exist yet (spec 3.5: local users only,
//!   Snikket's defaults: persistent, hidden, member invites allowed), configured by their owners
//!   (`muc#owner`), with affiliations managed by owners and admins (`muc#admin`), mediated
//!   invitations and destruction. Their configuration and affiliations are in the store.
//!
//! People on other servers can join (and be invited to) rooms, as members where a room is
//! members-only; they cannot create rooms, and circle chats stay with the circle's members.
//!
//! Occupants live in memory. A message is reflected to every occupant with a room stanza id and
//! kept in a short in-memory history that joiners receive; members who are not connected at all
//! get it in offline storage and a push notification. Not done: a room archive (MAM), nickname
//! registration, moderation beyond kicks and bans.

use crate::routing::Sender;
use crate::state::{lock, State};
use crate::xml::{self, el, NS_CLIENT, NS_DATA};
use minidom::Element;
use snikket_store::MucRoom;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

/// `http://jabber.org/protocol/muc`.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_DELAY: &str = "urn:xmpp:delay";
const NS_SID: &str = "urn:xmpp:sid:0";
const FORM_CONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// Messages a joiner gets as history at most.
const HISTORY: usize = 20;
/// Longest nickname, room name, description or subject accepted, in bytes.
const MAX_TEXT: usize = 1000;
/// Longest nickname accepted, in bytes.
const MAX_NICK: usize = 100;

/// An affiliation, ordered by privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Aff {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Aff {
    fn parse(s: &str) -> Option<Aff> {
        Some(match s {
            "outcast" => Aff::Outcast,
            "none" => Aff::None,
            "member" => Aff::Member,
            "admin" => Aff::Admin,
            "owner" => Aff::Owner,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Aff::Outcast => "outcast",
            Aff::None => "none",
            Aff::Member => "member",
            Aff::Admin => "admin",
            Aff::Owner => "owner",
        }
    }

    fn moderator(self) -> bool {
        self >= Aff::Admin
    }

    fn role(self) -> &'static str {
        if self.moderator() {
            "moderator"
        } else {
            "participant"
        }
    }
}

/// One occupant: the session behind a nickname.
#[derive(Debug, Clone)]
struct Occupant {
    /// The local account, or empty for someone on another server.
    username: String,
    /// `user@domain`.
    bare: String,
    resource: String,
    full: String,
    aff: Aff,
    /// The last presence it sent to the room (its payload is shown to others).
    presence: Element,
}

#[derive(Debug, Default)]
struct Room {
    /// Nickname → occupant.
    occupants: HashMap<String, Occupant>,
    /// Recent messages as reflected (without `to`), with their time.
    history: VecDeque<(Element, String)>,
    /// Whether everyone sees occupants' real JIDs.
    non_anonymous: bool,
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

/// What a room is.
enum Kind {
    Circle { circle_id: String, name: String },
    Own(MucRoom),
}

impl Kind {
    fn members_only(&self) -> bool {
        match self {
            Kind::Circle { .. } => true,
            Kind::Own(r) => r.members_only,
        }
    }

    fn non_anonymous(&self) -> bool {
        match self {
            Kind::Circle { .. } => true,
            Kind::Own(r) => r.non_anonymous,
        }
    }

    fn name(&self) -> &str {
        match self {
            Kind::Circle { name, .. } => name,
            Kind::Own(r) => &r.name,
        }
    }
}

/// A store failure: logged, answered with `internal-server-error`.
struct Failed;

fn store_err(e: snikket_store::StoreError) -> Failed {
    tracing::warn!(error = %e, "group chat storage failed");
    Failed
}

async fn lookup(state: &State, room: &str) -> Result<Option<Kind>, Failed> {
    if let Some((circle_id, name)) = state.store.chat_circle(room).await.map_err(store_err)? {
        return Ok(Some(Kind::Circle { circle_id, name }));
    }
    Ok(state
        .store
        .muc_room(room)
        .await
        .map_err(store_err)?
        .map(Kind::Own))
}

/// The affiliations of a room: circle members are members.
async fn affiliations(state: &State, kind: &Kind) -> Result<Vec<(String, Aff)>, Failed> {
    Ok(match kind {
        Kind::Circle { circle_id, .. } => state
            .store
            .circle_members(circle_id)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|u| (format!("{u}@{}", state.config.domain.ascii), Aff::Member))
            .collect(),
        Kind::Own(r) => state
            .store
            .muc_affiliations(&r.room_jid)
            .await
            .map_err(store_err)?
            .into_iter()
            .filter_map(|(jid, a)| Some((jid, Aff::parse(&a)?)))
            .collect(),
    })
}

async fn affiliation_of(state: &State, kind: &Kind, bare: &str) -> Result<Aff, Failed> {
    Ok(affiliations(state, kind)
        .await?
        .into_iter()
        .find(|(j, _)| j == bare)
        .map_or(Aff::None, |(_, a)| a))
}

fn feature(var: &str) -> Element {
    el("feature", NS_DISCO_INFO, &[("var", var)], vec![])
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

/// A room's disco#info: what Conversations and Dino check before they offer OMEMO (members-only
/// and non-anonymous), plus the room information form.
fn room_info(kind: &Kind) -> Element {
    let (persistent, public, description) = match kind {
        Kind::Circle { .. } => (true, false, ""),
        Kind::Own(r) => (r.persistent, r.public, r.description.as_str()),
    };
    let mut children = vec![el(
        "identity",
        NS_DISCO_INFO,
        &[
            ("category", "conference"),
            ("type", "text"),
            ("name", kind.name()),
        ],
        vec![],
    )];
    let flags = [
        (kind.members_only(), "muc_membersonly", "muc_open"),
        (persistent, "muc_persistent", "muc_temporary"),
        (public, "muc_public", "muc_hidden"),
        (
            kind.non_anonymous(),
            "muc_nonanonymous",
            "muc_semianonymous",
        ),
    ];
    for f in [
        NS_DISCO_INFO,
        NS_MUC,
        NS_SID,
        "muc_unmoderated",
        "muc_unsecured",
    ] {
        children.push(feature(f));
    }
    for (on, yes, no) in flags {
        children.push(feature(if on { yes } else { no }));
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
            field("muc#roomconfig_roomname", None, kind.name()),
            field("muc#roominfo_description", None, description),
        ],
    ));
    el("query", NS_DISCO_INFO, &[], children)
}

/// `<x xmlns='…muc#user'><item …/>[status codes]</x>` for an occupant; the real JID only when the
/// room shows it to this recipient.
fn user_x(o: &Occupant, role: &str, show_jid: bool, codes: &[&str]) -> Element {
    let mut attrs = vec![("affiliation", o.aff.as_str()), ("role", role)];
    if show_jid {
        attrs.push(("jid", &o.full));
    }
    let mut children = vec![el("item", NS_MUC_USER, &attrs, vec![])];
    for code in codes {
        children.push(el("status", NS_MUC_USER, &[("code", code)], vec![]));
    }
    el("x", NS_MUC_USER, &[], children)
}

/// An occupant's presence as the room shows it to `to`.
fn occupant_presence(
    room: &str,
    nick: &str,
    o: &Occupant,
    to: &Occupant,
    non_anonymous: bool,
    codes: &[&str],
) -> Element {
    let unavailable = o.presence.attr("type") == Some("unavailable");
    let mut p = el(
        "presence",
        NS_CLIENT,
        &[("from", &format!("{room}/{nick}")), ("to", &to.full)],
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
    let role = if unavailable { "none" } else { o.aff.role() };
    let show_jid = non_anonymous || to.aff.moderator() || to.full == o.full;
    p.append_child(user_x(o, role, show_jid, codes));
    p
}

fn send(state: &State, o: &Occupant, stanza: Element) {
    if o.username.is_empty() {
        // An occupant on another server.
        crate::s2s::queue(state, stanza);
    } else {
        state.router.to_resource(&o.username, &o.resource, stanza);
    }
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
        "message" => message(state, me, addr, stanza).await,
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
            match state.store.muc_public_rooms().await {
                Ok(rooms) => {
                    let items = rooms
                        .iter()
                        .map(|(jid, name)| {
                            el(
                                "item",
                                NS_DISCO_ITEMS,
                                &[("jid", jid), ("name", name)],
                                vec![],
                            )
                        })
                        .collect();
                    xml::iq_result(iq, Some(el("query", NS_DISCO_ITEMS, &[], items)))
                }
                Err(e) => {
                    store_err(e);
                    xml::error_reply(iq, "internal-server-error", None)
                }
            }
        } else if get && is("ping", "urn:xmpp:ping") {
            xml::iq_result(iq, None)
        } else {
            xml::error_reply(iq, "service-unavailable", None)
        }];
    };
    if let Some(nick) = &addr.nick {
        // XEP-0410 self-ping: the room answers for its occupants, and tells a client that is not
        // (or no longer, say after a restart) in the room so, and it joins again. Other IQs to
        // occupants (vCards) are not relayed.
        let mine = lock(&state.muc.rooms)
            .get(&room)
            .and_then(|r| nick_of(r, me))
            .map(|n| &n == nick);
        return vec![match mine {
            None => xml::error_reply(iq, "not-acceptable", None),
            Some(true) if get && is("ping", "urn:xmpp:ping") => xml::iq_result(iq, None),
            Some(_) => xml::error_reply(iq, "service-unavailable", None),
        }];
    }
    let room_kind = match lookup(state, &room).await {
        Ok(Some(k)) => k,
        Ok(None) => return vec![xml::error_reply(iq, "item-not-found", None)],
        Err(Failed) => return vec![xml::error_reply(iq, "internal-server-error", None)],
    };
    let reply = if get && is("query", NS_DISCO_INFO) {
        Ok(xml::iq_result(iq, Some(room_info(&room_kind))))
    } else if get && is("query", NS_DISCO_ITEMS) {
        Ok(xml::iq_result(
            iq,
            Some(el("query", NS_DISCO_ITEMS, &[], vec![])),
        ))
    } else if is("query", NS_MUC_ADMIN) {
        admin(state, me, &room, &room_kind, iq, get).await
    } else if is("query", NS_MUC_OWNER) {
        owner(state, me, &room, room_kind, iq, get).await
    } else {
        Ok(xml::error_reply(iq, "feature-not-implemented", None))
    };
    vec![reply.unwrap_or_else(|Failed| xml::error_reply(iq, "internal-server-error", None))]
}

/// `muc#admin`: affiliation lists, affiliation changes, kicks.
async fn admin(
    state: &State,
    me: &Sender,
    room: &str,
    kind: &Kind,
    iq: &Element,
    get: bool,
) -> Result<Element, Failed> {
    let my_aff = affiliation_of(state, kind, &me.bare).await?;
    let items: Vec<&Element> = xml::payload(iq)
        .map(|q| {
            q.children()
                .filter(|c| c.is("item", NS_MUC_ADMIN))
                .collect()
        })
        .unwrap_or_default();
    if get {
        // Members see the member list (OMEMO needs it); owners and admins see every list.
        let wanted = items
            .first()
            .and_then(|i| i.attr("affiliation"))
            .and_then(Aff::parse);
        let Some(wanted) = wanted.filter(|w| *w != Aff::None) else {
            return Ok(xml::error_reply(iq, "bad-request", None));
        };
        if my_aff < Aff::Member || (wanted == Aff::Outcast && !my_aff.moderator()) {
            return Ok(xml::error_reply(iq, "forbidden", None));
        }
        let list = affiliations(state, kind)
            .await?
            .into_iter()
            .filter(|(_, a)| *a == wanted)
            .map(|(jid, a)| {
                el(
                    "item",
                    NS_MUC_ADMIN,
                    &[("affiliation", a.as_str()), ("jid", &jid)],
                    vec![],
                )
            })
            .collect();
        return Ok(xml::iq_result(
            iq,
            Some(el("query", NS_MUC_ADMIN, &[], list)),
        ));
    }
    let Kind::Own(_) = kind else {
        return Ok(xml::error_reply(
            iq,
            "not-allowed",
            Some("The members of a circle chat are the circle's members"),
        ));
    };
    if !my_aff.moderator() || items.is_empty() {
        return Ok(xml::error_reply(iq, "forbidden", None));
    }
    for item in items {
        if let (Some(nick), Some("none")) = (item.attr("nick"), item.attr("role")) {
            // A kick (role none) by a moderator, of someone below them.
            let target_aff = lock(&state.muc.rooms)
                .get(room)
                .and_then(|r| r.occupants.get(nick))
                .map(|o| o.aff);
            match target_aff {
                None => return Ok(xml::error_reply(iq, "item-not-found", None)),
                Some(a) if a >= my_aff => return Ok(xml::error_reply(iq, "not-allowed", None)),
                Some(_) => remove_occupant(state, room, nick, "307"),
            }
            continue;
        }
        let (Some(jid), Some(aff)) = (
            item.attr("jid").and_then(|j| jid::Jid::new(j).ok()),
            item.attr("affiliation").and_then(Aff::parse),
        ) else {
            return Ok(xml::error_reply(iq, "bad-request", None));
        };
        let bare = jid.to_bare().to_string();
        let current = affiliation_of(state, kind, &bare).await?;
        // Admins manage members and outcasts; owners everything. The last owner stays.
        if my_aff != Aff::Owner && (current.moderator() || aff.moderator()) {
            return Ok(xml::error_reply(iq, "not-allowed", None));
        }
        if current == Aff::Owner && aff != Aff::Owner {
            let owners = affiliations(state, kind)
                .await?
                .iter()
                .filter(|(_, a)| *a == Aff::Owner)
                .count();
            if owners <= 1 {
                return Ok(xml::error_reply(
                    iq,
                    "conflict",
                    Some("A group chat needs an owner"),
                ));
            }
        }
        let stored = (aff != Aff::None).then(|| aff.as_str());
        state
            .store
            .muc_set_affiliation(room, &bare, stored)
            .await
            .map_err(store_err)?;
        affiliation_changed(state, room, kind, &bare, aff);
    }
    Ok(xml::iq_result(iq, None))
}

/// Tells the occupants about a new affiliation of `bare`, and removes its sessions when they
/// may no longer be there (banned: 301; not a member of a members-only room: 321).
fn affiliation_changed(state: &State, room: &str, kind: &Kind, bare: &str, aff: Aff) {
    let removal = if aff == Aff::Outcast {
        Some("301")
    } else if aff < Aff::Member && kind.members_only() {
        Some("321")
    } else {
        None
    };
    let nicks: Vec<String> = {
        let mut rooms = lock(&state.muc.rooms);
        let Some(r) = rooms.get_mut(room) else {
            return;
        };
        let nicks: Vec<String> = r
            .occupants
            .iter()
            .filter(|(_, o)| o.full.split('/').next() == Some(bare))
            .map(|(n, _)| n.clone())
            .collect();
        if removal.is_none() {
            for nick in &nicks {
                let Some(o) = r.occupants.get_mut(nick) else {
                    continue;
                };
                o.aff = aff;
                let o = o.clone();
                for other in r.occupants.values() {
                    send(
                        state,
                        other,
                        occupant_presence(room, nick, &o, other, r.non_anonymous, &[]),
                    );
                }
            }
        }
        nicks
    };
    if let Some(code) = removal {
        for nick in nicks {
            remove_occupant(state, room, &nick, code);
        }
    }
}

/// Removes an occupant the room sends away (kick, ban, members only), telling everyone why.
fn remove_occupant(state: &State, room: &str, nick: &str, code: &str) {
    let mut rooms = lock(&state.muc.rooms);
    let Some(r) = rooms.get_mut(room) else {
        return;
    };
    let Some(mut o) = r.occupants.remove(nick) else {
        return;
    };
    o.presence = el("presence", NS_CLIENT, &[("type", "unavailable")], vec![]);
    for other in r.occupants.values() {
        send(
            state,
            other,
            occupant_presence(room, nick, &o, other, r.non_anonymous, &[code]),
        );
    }
    send(
        state,
        &o,
        occupant_presence(room, nick, &o, &o, r.non_anonymous, &["110", code]),
    );
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true")
}

/// The configuration form of an own room.
fn config_form(r: &MucRoom, may_set_public: bool) -> Element {
    let field = |var: &str, kind: &str, value: &str| {
        let mut f = xml::form_field(var, Some(kind), value);
        if kind == "list-single" {
            for v in ["moderators", "anyone"] {
                f.append_child(el(
                    "option",
                    NS_DATA,
                    &[],
                    vec![xml::text_el("value", NS_DATA, v)],
                ));
            }
        }
        f
    };
    let b = |v: bool| if v { "1" } else { "0" };
    let mut fields = vec![
        field("FORM_TYPE", "hidden", FORM_CONFIG),
        field("muc#roomconfig_roomname", "text-single", &r.name),
        field("muc#roomconfig_roomdesc", "text-single", &r.description),
        field("muc#roomconfig_persistentroom", "boolean", b(r.persistent)),
        field("muc#roomconfig_membersonly", "boolean", b(r.members_only)),
        field(
            "muc#roomconfig_whois",
            "list-single",
            if r.non_anonymous {
                "anyone"
            } else {
                "moderators"
            },
        ),
        field("muc#roomconfig_allowinvites", "boolean", b(r.allow_invites)),
        field(
            "muc#roomconfig_changesubject",
            "boolean",
            b(r.change_subject),
        ),
    ];
    if may_set_public {
        fields.insert(
            3,
            field("muc#roomconfig_publicroom", "boolean", b(r.public)),
        );
    }
    el("x", NS_DATA, &[("type", "form")], fields)
}

/// Applies a submitted configuration form; fields we do not know are ignored.
fn apply_config(r: &mut MucRoom, form: &Element, may_set_public: bool) -> Result<(), &'static str> {
    for f in form.children().filter(|c| c.is("field", NS_DATA)) {
        let value = f
            .get_child("value", NS_DATA)
            .map(Element::text)
            .unwrap_or_default();
        if value.len() > MAX_TEXT {
            return Err("A value is too long");
        }
        match f.attr("var").unwrap_or("") {
            "muc#roomconfig_roomname" => r.name = value,
            "muc#roomconfig_roomdesc" => r.description = value,
            "muc#roomconfig_persistentroom" => r.persistent = truthy(&value),
            "muc#roomconfig_publicroom" if may_set_public => r.public = truthy(&value),
            "muc#roomconfig_membersonly" => r.members_only = truthy(&value),
            "muc#roomconfig_whois" => r.non_anonymous = value == "anyone",
            "muc#roomconfig_allowinvites" => r.allow_invites = truthy(&value),
            "muc#roomconfig_changesubject" => r.change_subject = truthy(&value),
            _ => {}
        }
    }
    Ok(())
}

/// Limited users cannot see or set whether a room is public (spec 4.1).
async fn may_set_public(state: &State, me: &Sender) -> Result<bool, Failed> {
    Ok(state
        .store
        .account(&me.username)
        .await
        .map_err(store_err)?
        .is_some_and(|a| a.role != snikket_store::Role::Limited))
}

/// `muc#owner`: the configuration form, its submission, and destroying the room.
async fn owner(
    state: &State,
    me: &Sender,
    room: &str,
    kind: Kind,
    iq: &Element,
    get: bool,
) -> Result<Element, Failed> {
    let Kind::Own(mut r) = kind else {
        return Ok(xml::error_reply(
            iq,
            "forbidden",
            Some("Circle chats are configured by the administrator"),
        ));
    };
    if affiliation_of(state, &Kind::Own(r.clone()), &me.bare).await? != Aff::Owner {
        return Ok(xml::error_reply(iq, "forbidden", None));
    }
    let public_ok = may_set_public(state, me).await?;
    let query = xml::payload(iq);
    if get {
        let form = config_form(&r, public_ok);
        return Ok(xml::iq_result(
            iq,
            Some(el("query", NS_MUC_OWNER, &[], vec![form])),
        ));
    }
    if query.is_some_and(|q| q.get_child("destroy", NS_MUC_OWNER).is_some()) {
        destroy(state, room);
        state.store.muc_delete_room(room).await.map_err(store_err)?;
        tracing::info!(room, by = %me.username, "group chat destroyed");
        return Ok(xml::iq_result(iq, None));
    }
    let Some(form) = query.and_then(|q| q.get_child("x", NS_DATA)) else {
        return Ok(xml::error_reply(iq, "bad-request", None));
    };
    if form.attr("type") == Some("cancel") {
        return Ok(xml::iq_result(iq, None));
    }
    let before = r.clone();
    if let Err(text) = apply_config(&mut r, form, public_ok) {
        return Ok(xml::error_reply(iq, "not-acceptable", Some(text)));
    }
    state.store.muc_update_room(&r).await.map_err(store_err)?;
    let privacy = before.non_anonymous != r.non_anonymous;
    let mut rooms = lock(&state.muc.rooms);
    if let Some(live) = rooms.get_mut(room) {
        live.non_anonymous = r.non_anonymous;
        // Status 104: the configuration changed; 172/173: the room became (semi-)anonymous.
        let mut codes = vec!["104"];
        if privacy {
            codes.push(if r.non_anonymous { "172" } else { "173" });
        }
        let x = el(
            "x",
            NS_MUC_USER,
            &[],
            codes
                .iter()
                .map(|c| el("status", NS_MUC_USER, &[("code", c)], vec![]))
                .collect(),
        );
        for o in live.occupants.values() {
            send(
                state,
                o,
                el(
                    "message",
                    NS_CLIENT,
                    &[("from", room), ("to", &o.full), ("type", "groupchat")],
                    vec![x.clone()],
                ),
            );
        }
    }
    Ok(xml::iq_result(iq, None))
}

/// An admin took a chat away from a circle: the room is closed (occupants get `<destroy/>`) and
/// the autojoin bookmarks the members were given are removed, so their apps do not join (and so
/// create) it again.
pub async fn circle_chat_removed(state: &State, circle_id: &str, room: &str) {
    destroy(state, room);
    let members = match state.store.circle_members(circle_id).await {
        Ok(m) => m,
        Err(e) => {
            store_err(e);
            return;
        }
    };
    for member in members {
        if let Err(e) = crate::pep::retract_as(state, &member, crate::bookmarks::NODE, room).await {
            tracing::warn!(error = %e, user = %member, "removing a circle chat bookmark failed");
        }
    }
}

/// Sends every occupant away because the room is gone.
fn destroy(state: &State, room: &str) {
    let Some(r) = lock(&state.muc.rooms).remove(room) else {
        return;
    };
    for (nick, o) in &r.occupants {
        let mut p = el(
            "presence",
            NS_CLIENT,
            &[
                ("from", &format!("{room}/{nick}")),
                ("to", &o.full),
                ("type", "unavailable"),
            ],
            vec![],
        );
        p.append_child(el(
            "x",
            NS_MUC_USER,
            &[],
            vec![
                el(
                    "item",
                    NS_MUC_USER,
                    &[("affiliation", "none"), ("role", "none")],
                    vec![],
                ),
                el("destroy", NS_MUC_USER, &[], vec![]),
            ],
        ));
        send(state, o, p);
    }
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
            leave(state, &room, &me.full, Some(stanza)).await;
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

/// A new own room with Snikket's defaults (spec 3.5), `me` its owner.
async fn create(state: &State, me: &Sender, room: &str) -> Result<Option<Kind>, Failed> {
    let r = MucRoom {
        room_jid: room.to_string(),
        name: String::new(),
        description: String::new(),
        subject: String::new(),
        persistent: true,
        public: false,
        members_only: false,
        non_anonymous: false,
        allow_invites: true,
        change_subject: false,
        created_at: snikket_store::now(),
    };
    if !state
        .store
        .muc_create_room(&r, &me.bare)
        .await
        .map_err(store_err)?
    {
        // Someone else created it a moment ago.
        return lookup(state, room).await;
    }
    tracing::info!(room, by = %me.username, "group chat created");
    Ok(Some(Kind::Own(r)))
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
    let mut created = false;
    let kind = match lookup(state, room).await {
        Ok(Some(k)) => k,
        Ok(None) if me.username.is_empty() => {
            return presence_error(
                &stanza,
                "not-allowed",
                Some("Only people on this server can create group chats"),
            )
        }
        Ok(None) => match create(state, me, room).await {
            Ok(Some(k)) => {
                created = true;
                k
            }
            Ok(None) | Err(Failed) => {
                return presence_error(&stanza, "internal-server-error", None)
            }
        },
        Err(Failed) => return presence_error(&stanza, "internal-server-error", None),
    };
    let aff = match affiliation_of(state, &kind, &me.bare).await {
        Ok(a) => a,
        Err(Failed) => return presence_error(&stanza, "internal-server-error", None),
    };
    if aff == Aff::Outcast {
        return presence_error(
            &stanza,
            "forbidden",
            Some("You are banned from this group chat"),
        );
    }
    if kind.members_only() && aff < Aff::Member {
        let text = match kind {
            Kind::Circle { .. } => "Only members of this circle can join",
            Kind::Own(_) => "Only members can join this group chat",
        };
        return presence_error(&stanza, "registration-required", Some(text));
    }
    let subject_text = match &kind {
        Kind::Own(r) => r.subject.clone(),
        Kind::Circle { .. } => String::new(),
    };
    let max_history = stanza
        .get_child("x", NS_MUC)
        .and_then(|x| x.get_child("history", NS_MUC))
        .and_then(|h| h.attr("maxstanzas"))
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(HISTORY)
        .min(HISTORY);
    let me_occupant = Occupant {
        username: me.username.clone(),
        bare: me.bare.clone(),
        resource: me.resource.clone(),
        full: me.full.clone(),
        aff,
        presence: stanza,
    };
    let mut rooms = lock(&state.muc.rooms);
    let r = rooms.entry(room.to_string()).or_default();
    r.non_anonymous = kind.non_anonymous();
    if let Some(other) = r.occupants.get(nick) {
        if other.bare != me.bare {
            return presence_error(
                &me_occupant.presence,
                "conflict",
                Some("That nickname is already in use"),
            );
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
                    occupant_presence(room, &old, &o, other, r.non_anonymous, &[]),
                );
            }
        }
    }
    // Another session of the same account may hold the nickname: it is replaced.
    r.occupants.insert(nick.to_string(), me_occupant.clone());
    if joining {
        for (n, o) in r.occupants.iter().filter(|(n, _)| n.as_str() != nick) {
            send(
                state,
                &me_occupant,
                occupant_presence(room, n, o, &me_occupant, r.non_anonymous, &[]),
            );
        }
    }
    for o in r.occupants.values().filter(|o| o.full != me.full) {
        send(
            state,
            o,
            occupant_presence(room, nick, &me_occupant, o, r.non_anonymous, &[]),
        );
    }
    let mut codes = vec!["110"];
    if r.non_anonymous {
        codes.push("100");
    }
    if created {
        codes.push("201");
    }
    send(
        state,
        &me_occupant,
        occupant_presence(
            room,
            nick,
            &me_occupant,
            &me_occupant,
            r.non_anonymous,
            &codes,
        ),
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
            vec![xml::text_el("subject", NS_CLIENT, &subject_text)],
        );
        send(state, &me_occupant, subject);
        tracing::debug!(room, user = %me.username, "joined a group chat");
    }
    Vec::new()
}

/// `full` leaves `room` (an unavailable presence, or its session ended). A temporary room goes
/// when its last occupant does.
async fn leave(state: &State, room: &str, full: &str, stanza: Option<Element>) {
    let now_empty = {
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
                occupant_presence(room, &nick, &o, other, r.non_anonymous, &[]),
            );
        }
        send(
            state,
            &o,
            occupant_presence(room, &nick, &o, &o, r.non_anonymous, &["110"]),
        );
        let empty = r.occupants.is_empty();
        if empty && r.history.is_empty() {
            rooms.remove(room);
        }
        empty
    };
    if now_empty {
        if let Ok(Some(r)) = state.store.muc_room(room).await {
            if !r.persistent {
                lock(&state.muc.rooms).remove(room);
                if let Err(e) = state.store.muc_delete_room(room).await {
                    store_err(e);
                }
            }
        }
    }
}

/// A session ended or went unavailable: it leaves every room it was in.
pub async fn session_ended(state: &State, full: &str) {
    let joined: Vec<String> = lock(&state.muc.rooms)
        .iter()
        .filter(|(_, r)| r.occupants.values().any(|o| o.full == full))
        .map(|(k, _)| k.clone())
        .collect();
    for room in joined {
        leave(state, &room, full, None).await;
    }
}

fn not_occupant(stanza: &Element) -> Vec<Element> {
    vec![xml::error_reply(
        stanza,
        "not-acceptable",
        Some("Only occupants may send messages to this room"),
    )]
}

async fn message(state: &State, me: &Sender, addr: Address, stanza: Element) -> Vec<Element> {
    let kind = stanza.attr("type").unwrap_or("normal").to_string();
    if kind == "error" {
        return Vec::new();
    }
    let Some(room) = addr.room else {
        return vec![xml::error_reply(&stanza, "service-unavailable", None)];
    };
    if let Some(invite) = stanza
        .get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("invite", NS_MUC_USER))
    {
        let invite = invite.clone();
        return invitation(state, me, &room, &stanza, &invite).await;
    }
    let subject = stanza
        .get_child("subject", NS_CLIENT)
        .map(Element::text)
        .filter(|_| kind == "groupchat" && addr.nick.is_none());
    if let Some(subject) = subject {
        return change_subject(state, me, &room, &stanza, subject).await;
    }
    match reflect(state, me, &room, addr.nick, stanza, &kind) {
        Reflected::Replies(r) => r,
        Reflected::Stored(stanza, present) => {
            offline_delivery(state, &room, stanza, &present).await;
            Vec::new()
        }
    }
}

/// What became of a message in a room.
enum Reflected {
    /// Answers for the sender (errors), or nothing.
    Replies(Vec<Element>),
    /// Reflected and kept in the history; the users who are in the room.
    Stored(Element, HashSet<String>),
}

/// Sends a message to its occupant (private) or to everyone (groupchat), under the room's lock.
fn reflect(
    state: &State,
    me: &Sender,
    room: &str,
    to_nick: Option<String>,
    mut stanza: Element,
    kind: &str,
) -> Reflected {
    let mut rooms = lock(&state.muc.rooms);
    let Some(r) = rooms.get_mut(room) else {
        return Reflected::Replies(not_occupant(&stanza));
    };
    let Some(nick) = nick_of(r, me) else {
        return Reflected::Replies(not_occupant(&stanza));
    };
    let from = format!("{room}/{nick}");
    if let Some(to_nick) = to_nick {
        // A private message to one occupant.
        let Some(target) = r.occupants.get(&to_nick) else {
            return Reflected::Replies(vec![xml::error_reply(&stanza, "item-not-found", None)]);
        };
        xml::set_attr(&mut stanza, "from", &from);
        xml::set_attr(&mut stanza, "to", &target.full);
        stanza.append_child(el("x", NS_MUC_USER, &[], vec![]));
        send(state, target, stanza);
        return Reflected::Replies(Vec::new());
    }
    if kind != "groupchat" {
        return Reflected::Replies(vec![xml::error_reply(&stanza, "bad-request", None)]);
    }
    xml::set_attr(&mut stanza, "from", &from);
    xml::remove_attr(&mut stanza, "to");
    stanza.append_child(el(
        "stanza-id",
        NS_SID,
        &[("id", &crate::archive::new_archive_id()), ("by", room)],
        vec![],
    ));
    for o in r.occupants.values() {
        let mut copy = stanza.clone();
        xml::set_attr(&mut copy, "to", &o.full);
        send(state, o, copy);
    }
    let has_body = stanza.get_child("body", NS_CLIENT).is_some()
        || stanza.children().any(|c| c.name() == "encrypted");
    if !has_body {
        return Reflected::Replies(Vec::new());
    }
    r.history.push_back((stanza.clone(), now_stamp()));
    while r.history.len() > HISTORY {
        r.history.pop_front();
    }
    let present = r.occupants.values().map(|o| o.username.clone()).collect();
    Reflected::Stored(stanza, present)
}

fn now_stamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Group messages for members who are not connected at all (spec 3.5, `muc_offline_delivery`):
/// each gets the message in offline storage, delivered at the next login, and a push
/// notification wakes their phone. Members online elsewhere rejoin and get the history.
async fn offline_delivery(state: &State, room: &str, stanza: Element, present: &HashSet<String>) {
    let kind = match lookup(state, room).await {
        Ok(Some(k)) => k,
        Ok(None) | Err(Failed) => return,
    };
    let Ok(members) = affiliations(state, &kind).await else {
        return;
    };
    let suffix = format!("@{}", state.config.domain.ascii);
    for (jid, aff) in members {
        let Some(user) = jid.strip_suffix(&suffix) else {
            continue;
        };
        if aff < Aff::Member
            || present.contains(user)
            || !state.router.available_resources(user).is_empty()
        {
            continue;
        }
        // Affiliations outlive deleted accounts.
        if !matches!(state.store.account(user).await, Ok(Some(_))) {
            continue;
        }
        let mut copy = stanza.clone();
        xml::set_attr(&mut copy, "to", &jid);
        let text = match snikket_xmpp::framing::writer::element_to_bytes(&copy) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => continue,
        };
        if let Err(e) = state.store.store_offline(user, &text).await {
            tracing::warn!(error = %e, "storing a group message offline failed");
            continue;
        }
        crate::push::offline(state, user, &copy).await;
    }
}

/// A subject change: occupants of an own room that allows it, or its moderators.
async fn change_subject(
    state: &State,
    me: &Sender,
    room: &str,
    stanza: &Element,
    subject: String,
) -> Vec<Element> {
    let occupant = lock(&state.muc.rooms).get(room).and_then(|r| {
        let nick = nick_of(r, me)?;
        r.occupants.get(&nick).map(|o| (nick, o.aff))
    });
    let Some((nick, aff)) = occupant else {
        return not_occupant(stanza);
    };
    let mut own = match lookup(state, room).await {
        Ok(Some(Kind::Own(r))) if r.change_subject || aff.moderator() => r,
        Ok(_) => {
            return vec![xml::error_reply(
                stanza,
                "forbidden",
                Some("You may not change the subject of this group chat"),
            )]
        }
        Err(Failed) => return vec![xml::error_reply(stanza, "internal-server-error", None)],
    };
    if subject.len() > MAX_TEXT {
        return vec![xml::error_reply(stanza, "not-acceptable", None)];
    }
    own.subject = subject.clone();
    if let Err(e) = state.store.muc_update_room(&own).await {
        store_err(e);
        return vec![xml::error_reply(stanza, "internal-server-error", None)];
    }
    let rooms = lock(&state.muc.rooms);
    if let Some(r) = rooms.get(room) {
        for o in r.occupants.values() {
            send(
                state,
                o,
                el(
                    "message",
                    NS_CLIENT,
                    &[
                        ("from", &format!("{room}/{nick}")),
                        ("to", &o.full),
                        ("type", "groupchat"),
                    ],
                    vec![xml::text_el("subject", NS_CLIENT, &subject)],
                ),
            );
        }
    }
    Vec::new()
}

/// A mediated invitation (XEP-0045 §7.8.2), to someone here or on another server: in a
/// members-only room the invitee becomes a member when the inviter may invite.
async fn invitation(
    state: &State,
    me: &Sender,
    room: &str,
    stanza: &Element,
    invite: &Element,
) -> Vec<Element> {
    let Some(to) = invite.attr("to").and_then(|t| jid::Jid::new(t).ok()) else {
        return vec![xml::error_reply(stanza, "jid-malformed", None)];
    };
    let to = to.to_bare();
    let local = to.domain().as_str() == state.config.domain.ascii;
    let Some(invitee) = to.node().map(|n| n.as_str().to_string()) else {
        return vec![xml::error_reply(stanza, "jid-malformed", None)];
    };
    let kind = match lookup(state, room).await {
        Ok(Some(k)) => k,
        Ok(None) => return vec![xml::error_reply(stanza, "item-not-found", None)],
        Err(Failed) => return vec![xml::error_reply(stanza, "internal-server-error", None)],
    };
    let Kind::Own(r) = &kind else {
        return vec![xml::error_reply(
            stanza,
            "not-allowed",
            Some("The members of a circle chat are the circle's members"),
        )];
    };
    let my_aff = match affiliation_of(state, &kind, &me.bare).await {
        Ok(a) => a,
        Err(Failed) => return vec![xml::error_reply(stanza, "internal-server-error", None)],
    };
    let present = lock(&state.muc.rooms)
        .get(room)
        .is_some_and(|live| nick_of(live, me).is_some());
    if !present && my_aff < Aff::Member {
        return not_occupant(stanza);
    }
    if r.members_only {
        if !(my_aff.moderator() || (r.allow_invites && my_aff >= Aff::Member)) {
            return vec![xml::error_reply(stanza, "forbidden", None)];
        }
        let bare = to.to_string();
        match affiliation_of(state, &kind, &bare).await {
            Ok(a) if a >= Aff::Member => {}
            Ok(Aff::Outcast) => return vec![xml::error_reply(stanza, "forbidden", None)],
            Ok(_) => {
                if let Err(e) = state
                    .store
                    .muc_set_affiliation(room, &bare, Some("member"))
                    .await
                {
                    store_err(e);
                    return vec![xml::error_reply(stanza, "internal-server-error", None)];
                }
            }
            Err(Failed) => return vec![xml::error_reply(stanza, "internal-server-error", None)],
        }
    }
    let mut inv = el("invite", NS_MUC_USER, &[("from", &me.bare)], vec![]);
    if let Some(reason) = invite.get_child("reason", NS_MUC_USER) {
        inv.append_child(reason.clone());
    }
    let message = el(
        "message",
        NS_CLIENT,
        &[("from", room), ("to", &to.to_string())],
        vec![el("x", NS_MUC_USER, &[], vec![inv])],
    );
    if local {
        crate::routing::deliver_message(state, &invitee, None, "normal", message).await;
    } else {
        crate::s2s::send(state, message).await;
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::text_el;

    fn own(members_only: bool, non_anonymous: bool) -> MucRoom {
        MucRoom {
            room_jid: "r@groups.example.com".into(),
            name: "Trip".into(),
            description: String::new(),
            subject: String::new(),
            persistent: true,
            public: false,
            members_only,
            non_anonymous,
            allow_invites: true,
            change_subject: false,
            created_at: 0,
        }
    }

    fn features(info: &Element) -> Vec<String> {
        info.children()
            .filter(|c| c.name() == "feature")
            .filter_map(|c| c.attr("var"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn room_info_says_what_omemo_clients_look_for() {
        let circle = Kind::Circle {
            circle_id: "c".into(),
            name: "Family".into(),
        };
        let info = room_info(&circle);
        let f = features(&info);
        for want in [
            NS_MUC,
            "muc_membersonly",
            "muc_nonanonymous",
            "muc_persistent",
            "muc_hidden",
        ] {
            assert!(f.iter().any(|x| x == want), "{want}");
        }
        let identity = info.get_child("identity", NS_DISCO_INFO).unwrap();
        assert_eq!(identity.attr("name"), Some("Family"));
        let f = features(&room_info(&Kind::Own(own(false, false))));
        assert!(f.iter().any(|x| x == "muc_open"));
        assert!(f.iter().any(|x| x == "muc_semianonymous"));
    }

    fn occupant(aff: Aff) -> Occupant {
        Occupant {
            username: "ann".into(),
            bare: "ann@example.com".into(),
            resource: "phone".into(),
            full: "ann@example.com/phone".into(),
            aff,
            presence: el(
                "presence",
                NS_CLIENT,
                &[],
                vec![
                    text_el("show", NS_CLIENT, "away"),
                    el("x", NS_MUC, &[], vec![]),
                ],
            ),
        }
    }

    #[test]
    fn occupant_presence_carries_the_real_jid_only_where_the_room_shows_it() {
        let ann = occupant(Aff::Owner);
        let mut bob = occupant(Aff::Member);
        bob.full = "bob@example.com/pc".into();
        let p = occupant_presence(
            "r@groups.example.com",
            "Ann",
            &ann,
            &ann,
            true,
            &["110", "100"],
        );
        assert_eq!(p.attr("from"), Some("r@groups.example.com/Ann"));
        assert_eq!(p.attr("type"), None);
        assert!(p.get_child("show", NS_CLIENT).is_some());
        assert!(p.get_child("x", NS_MUC).is_none());
        let x = p.get_child("x", NS_MUC_USER).unwrap();
        let item = x.get_child("item", NS_MUC_USER).unwrap();
        assert_eq!(item.attr("jid"), Some("ann@example.com/phone"));
        assert_eq!(item.attr("role"), Some("moderator"));
        assert_eq!(item.attr("affiliation"), Some("owner"));
        let codes: Vec<&str> = x
            .children()
            .filter(|c| c.name() == "status")
            .filter_map(|c| c.attr("code"))
            .collect();
        assert_eq!(codes, ["110", "100"]);
        // Semi-anonymous: a participant does not see Ann's JID, the moderator sees Bob's.
        let to_bob = occupant_presence("r@groups.example.com", "Ann", &ann, &bob, false, &[]);
        let item = to_bob
            .get_child("x", NS_MUC_USER)
            .and_then(|x| x.get_child("item", NS_MUC_USER))
            .unwrap();
        assert_eq!(item.attr("jid"), None);
        let to_ann = occupant_presence("r@groups.example.com", "Bob", &bob, &ann, false, &[]);
        let item = to_ann
            .get_child("x", NS_MUC_USER)
            .and_then(|x| x.get_child("item", NS_MUC_USER))
            .unwrap();
        assert_eq!(item.attr("jid"), Some("bob@example.com/pc"));
    }

    #[test]
    fn the_config_form_round_trips_and_hides_public_from_limited_users() {
        let mut r = own(false, false);
        let form = config_form(&r, true);
        let vars: Vec<&str> = form.children().filter_map(|f| f.attr("var")).collect();
        assert!(vars.contains(&"muc#roomconfig_publicroom"));
        let limited = config_form(&r, false);
        assert!(!limited
            .children()
            .any(|f| f.attr("var") == Some("muc#roomconfig_publicroom")));
        let submit: Element = "<x xmlns='jabber:x:data' type='submit'>\
            <field var='muc#roomconfig_roomname'><value>Ski trip</value></field>\
            <field var='muc#roomconfig_membersonly'><value>1</value></field>\
            <field var='muc#roomconfig_whois'><value>anyone</value></field>\
            <field var='muc#roomconfig_publicroom'><value>true</value></field>\
            <field var='muc#roomconfig_persistentroom'><value>0</value></field></x>"
            .parse()
            .unwrap();
        apply_config(&mut r, &submit, false).unwrap();
        assert_eq!(r.name, "Ski trip");
        assert!(r.members_only && r.non_anonymous && !r.persistent);
        assert!(!r.public, "a limited user's public flag is ignored");
        apply_config(&mut r, &submit, true).unwrap();
        assert!(r.public);
        let long: Element = format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_roomname'><value>{}</value></field></x>",
            "a".repeat(MAX_TEXT + 1)
        )
        .parse()
        .unwrap();
        assert!(apply_config(&mut r, &long, true).is_err());
    }

    #[test]
    fn affiliations_are_ordered_by_privilege() {
        assert!(Aff::Owner > Aff::Admin && Aff::Admin > Aff::Member);
        assert!(Aff::Member > Aff::None && Aff::None > Aff::Outcast);
        for a in ["owner", "admin", "member", "none", "outcast"] {
            assert_eq!(Aff::parse(a).map(Aff::as_str), Some(a));
        }
        assert_eq!(Aff::parse("king"), None);
        assert_eq!(Aff::Admin.role(), "moderator");
        assert_eq!(Aff::Member.role(), "participant");
    }
}
