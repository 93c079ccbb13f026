//! Bookmarks (XEP-0402) with the XEP-0048 compatibility of XEP-0402 §5.3: bookmarks live as
//! items of the `urn:xmpp:bookmarks:1` PEP node (one per room, id = room JID); a client still on
//! XEP-0048 private storage (`storage:bookmarks` over XEP-0049) reads a `<storage/>` made from
//! those items, and what it stores is turned back into items (changed ones published, missing
//! ones retracted), so both kinds of client see the same list.

use crate::pep;
use crate::routing::Sender;
use crate::state::State;
use crate::xml::{el, text_el};
use minidom::Element;
use snikket_store::StoreError;
use std::collections::BTreeMap;

/// XEP-0048's namespace.
pub const NS_LEGACY: &str = "storage:bookmarks";
/// XEP-0402's node and namespace.
pub const NODE: &str = "urn:xmpp:bookmarks:1";
/// What the account's disco#info announces (XEP-0402 §5.3).
pub const FEATURE_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
/// The node configuration XEP-0402 §3 asks for.
const OPTIONS: &[(&str, &str)] = &[("access_model", "whitelist"), ("max_items", "max")];

/// One room: (name, autojoin, nick, password).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Room {
    name: Option<String>,
    autojoin: bool,
    nick: Option<String>,
    password: Option<String>,
}

fn child_text(e: &Element, name: &str, ns: &str) -> Option<String> {
    e.get_child(name, ns)
        .map(Element::text)
        .filter(|t| !t.is_empty())
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

/// Rooms of a XEP-0048 `<storage/>`, by JID (invalid JIDs are skipped).
fn rooms_from_legacy(storage: &Element) -> BTreeMap<String, Room> {
    storage
        .children()
        .filter(|c| c.is("conference", NS_LEGACY))
        .filter_map(|c| {
            let jid = jid::BareJid::new(c.attr("jid")?).ok()?.to_string();
            let room = Room {
                name: c.attr("name").map(str::to_string),
                autojoin: truthy(c.attr("autojoin")),
                nick: child_text(c, "nick", NS_LEGACY),
                password: child_text(c, "password", NS_LEGACY),
            };
            Some((jid, room))
        })
        .collect()
}

fn room_from_item(conference: &Element) -> Room {
    Room {
        name: conference.attr("name").map(str::to_string),
        autojoin: truthy(conference.attr("autojoin")),
        nick: child_text(conference, "nick", NODE),
        password: child_text(conference, "password", NODE),
    }
}

/// A room in either namespace: `<conference/>` with `jid` for XEP-0048, without for XEP-0402.
fn conference(ns: &str, jid: Option<&str>, room: &Room) -> Element {
    let mut attrs = vec![("autojoin", if room.autojoin { "true" } else { "false" })];
    if let Some(j) = jid {
        attrs.push(("jid", j));
    }
    if let Some(n) = &room.name {
        attrs.push(("name", n));
    }
    let mut children = Vec::new();
    if let Some(n) = &room.nick {
        children.push(text_el("nick", ns, n));
    }
    if let Some(p) = &room.password {
        children.push(text_el("password", ns, p));
    }
    el("conference", ns, &attrs, children)
}

/// The user's bookmarks as the items of the PEP node, by room JID.
async fn current(state: &State, me: &Sender) -> Result<BTreeMap<String, Room>, StoreError> {
    if state.store.pep_node(&me.username, NODE).await?.is_none() {
        return Ok(BTreeMap::new());
    }
    let items = state
        .store
        .pep_items(&me.username, NODE, &[], i64::MAX)
        .await?;
    Ok(items
        .into_iter()
        .filter_map(|i| {
            let c = i.payload.parse::<Element>().ok()?;
            c.is("conference", NODE).then(|| (i.id, room_from_item(&c)))
        })
        .collect())
}

/// The XEP-0048 `<storage/>` a legacy client reads.
pub async fn legacy_get(state: &State, me: &Sender) -> Result<Element, StoreError> {
    let rooms = current(state, me).await?;
    let children = rooms
        .iter()
        .map(|(jid, room)| conference(NS_LEGACY, Some(jid), room))
        .collect();
    Ok(el("storage", NS_LEGACY, &[], children))
}

/// Gives `username` an autojoin bookmark for each group chat of the circle (spec 4.3) it does not
/// have a bookmark for yet; a bookmark the user changed or removed is left alone once it exists.
pub async fn circle_chats(state: &State, username: &str, circle_id: &str) {
    let chats = match state.store.circle_chats(circle_id).await {
        Ok(c) if c.is_empty() => return,
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "listing circle chats failed");
            return;
        }
    };
    let have = match state.store.pep_items(username, NODE, &[], i64::MAX).await {
        Ok(items) => items.into_iter().map(|i| i.id).collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(error = %e, "reading bookmarks failed");
            return;
        }
    };
    for chat in chats.iter().filter(|c| !have.contains(&c.room_jid)) {
        let room = Room {
            name: Some(chat.name.clone()),
            autojoin: true,
            ..Room::default()
        };
        let item = conference(NODE, None, &room);
        if let Err(e) = pep::publish_as(state, username, NODE, OPTIONS, &chat.room_jid, &item).await
        {
            tracing::warn!(error = %e, "adding a circle chat bookmark failed");
        }
    }
}

/// A legacy client stored `<storage/>`: make the PEP node say the same.
pub async fn legacy_set(state: &State, me: &Sender, storage: &Element) -> Result<(), StoreError> {
    let wanted = rooms_from_legacy(storage);
    let have = current(state, me).await?;
    for (jid, room) in &wanted {
        if have.get(jid) != Some(room) {
            let item = conference(NODE, None, room);
            pep::publish_as(state, &me.username, NODE, OPTIONS, jid, &item).await?;
        }
    }
    for jid in have.keys().filter(|j| !wanted.contains_key(*j)) {
        pep::retract_as(state, &me.username, NODE, jid).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_modern_forms_carry_the_same_room() {
        let storage: Element = "<storage xmlns='storage:bookmarks'>\
            <conference jid='Family@groups.chat.test' name='Family' autojoin='1'><nick>ivy</nick></conference>\
            <conference jid='not a jid@@' name='bad'/>\
            <url name='x' url='https://example.com'/></storage>"
            .parse()
            .unwrap();
        let rooms = rooms_from_legacy(&storage);
        assert_eq!(rooms.len(), 1, "invalid JIDs and URLs are skipped");
        let (jid, room) = rooms.iter().next().unwrap();
        assert_eq!(jid, "family@groups.chat.test", "room JIDs are normalized");
        assert!(room.autojoin);
        let item = conference(NODE, None, room);
        assert_eq!(item.attr("jid"), None);
        assert_eq!(item.attr("autojoin"), Some("true"));
        assert_eq!(room_from_item(&item), *room);
        let back = conference(NS_LEGACY, Some(jid), room);
        assert_eq!(
            rooms_from_legacy(&el("storage", NS_LEGACY, &[], vec![back])),
            rooms
        );
    }
}
