//! Account data export and import in XEP-0227 format (spec 5.4.5, 5.6.3): the stores Snikket's
//! portal moves — roster, vCard, PEP node configurations and PEP items — as one
//! `<server-data xmlns='urn:xmpp:pie:0'>` document. Exports can be imported by Prosody
//! (`mod_http_xep227`) and other servers; imports accept what those export, rewritten to the
//! importing account whatever host and user the file names.

use crate::pep::{self, ImportSkip, NS_PUBSUB, NS_PUBSUB_OWNER};
use crate::routing::Sender;
use crate::state::State;
use crate::xml::{el, text_el, NS_CLIENT};
use minidom::Element;
use snikket_store::{RosterItem, StoreError, Subscription};

/// `urn:xmpp:pie:0`.
pub const NS_PIE: &str = "urn:xmpp:pie:0";
const NS_ROSTER: &str = "jabber:iq:roster";
const NS_DATA: &str = "jabber:x:data";
const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// Most roster entries imported.
const MAX_ROSTER: usize = 5000;

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a XEP-0227 document with a user in it.
    #[error("not a XEP-0227 document with an account in it")]
    NotXep227,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Roster entries added or updated.
    pub roster_items: u32,
    /// Whether a vCard was imported.
    pub vcard: bool,
    /// PEP nodes created or reconfigured.
    pub pep_nodes: u32,
    /// PEP items stored.
    pub pep_items: u32,
    /// Entries left out (invalid, too large, over a limit).
    pub skipped: u32,
}

fn vcard_get(me: &Sender) -> Element {
    el(
        "iq",
        NS_CLIENT,
        &[("type", "get"), ("id", "export"), ("from", &me.full)],
        vec![el("vCard", crate::vcard::NS_VCARD, &[], vec![])],
    )
}

/// The account's data as a XEP-0227 document; `None` when there is nothing to export.
pub async fn export(state: &State, username: &str) -> Result<Option<String>, StoreError> {
    let domain = &state.config.domain.ascii;
    let me = Sender::new(username, "export", domain);
    let mut user = el("user", NS_PIE, &[("name", username)], vec![]);
    let mut any = false;

    // The circles' contacts, as a client logging in now would see them.
    crate::routing::sync_circles(state, username).await;
    let roster = state.store.roster_items(username).await?;
    if !roster.is_empty() {
        any = true;
        let items = roster
            .iter()
            .map(|i| crate::modules::roster_item_el(i, false))
            .collect();
        user.append_child(el("query", NS_ROSTER, &[], items));
    }

    let reply = crate::vcard::iq(state, &me, username, &vcard_get(&me)).await;
    if let Some(card) = reply
        .get_child("vCard", crate::vcard::NS_VCARD)
        .filter(|c| c.children().next().is_some())
    {
        any = true;
        user.append_child(card.clone());
    }

    let nodes = state.store.pep_nodes(username).await?;
    if !nodes.is_empty() {
        any = true;
        let mut configs = Vec::new();
        let mut contents = Vec::new();
        for node in &nodes {
            let field = |var: &str, value: &str| {
                el(
                    "field",
                    NS_DATA,
                    &[("var", var)],
                    vec![text_el("value", NS_DATA, value)],
                )
            };
            let form = el(
                "x",
                NS_DATA,
                &[("type", "submit")],
                vec![
                    field("FORM_TYPE", FORM_NODE_CONFIG),
                    field("pubsub#access_model", &node.access_model),
                    field("pubsub#max_items", &node.max_items.to_string()),
                ],
            );
            configs.push(el(
                "configure",
                NS_PUBSUB_OWNER,
                &[("node", &node.node)],
                vec![form],
            ));
            let mut stored = state
                .store
                .pep_items(username, &node.node, &[], node.max_items.max(1))
                .await?;
            stored.reverse();
            let items: Vec<Element> = stored
                .into_iter()
                .filter_map(|i| {
                    let payload = i.payload.parse::<Element>().ok()?;
                    Some(el("item", NS_PUBSUB, &[("id", &i.id)], vec![payload]))
                })
                .collect();
            if !items.is_empty() {
                contents.push(el("items", NS_PUBSUB, &[("node", &node.node)], items));
            }
        }
        user.append_child(el("pubsub", NS_PUBSUB_OWNER, &[], configs));
        if !contents.is_empty() {
            user.append_child(el("pubsub", NS_PUBSUB, &[], contents));
        }
    }
    if !any {
        return Ok(None);
    }
    let doc = el(
        "server-data",
        NS_PIE,
        &[],
        vec![el("host", NS_PIE, &[("jid", domain)], vec![user])],
    );
    Ok(Some(format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n{}",
        String::from(&doc)
    )))
}

/// Imports a XEP-0227 document's first account into `username`'s account.
pub async fn import(state: &State, username: &str, doc: &str) -> Result<Imported, ImportError> {
    let root: Element = doc.parse().map_err(|_| ImportError::NotXep227)?;
    if !root.is("server-data", NS_PIE) {
        return Err(ImportError::NotXep227);
    }
    let user = first_user(&root).ok_or(ImportError::NotXep227)?;
    let domain = &state.config.domain.ascii;
    let me = Sender::new(username, "import", domain);
    let mut out = Imported::default();

    if let Some(query) = user.get_child("query", NS_ROSTER) {
        let own = format!("{username}@{domain}");
        let items = children_named(query, "item", NS_ROSTER);
        for item in items.into_iter().take(MAX_ROSTER) {
            match roster_item(item, &own) {
                Some(ri) => {
                    let version = state.store.put_roster_item(username, &ri).await?;
                    crate::routing::push_item(state, username, &ri, version, false);
                    out.roster_items += 1;
                }
                None => out.skipped += 1,
            }
        }
    }

    if let Some(card) = user.get_child("vCard", crate::vcard::NS_VCARD) {
        let iq = el(
            "iq",
            NS_CLIENT,
            &[("type", "set"), ("id", "import"), ("from", &me.full)],
            vec![card.clone()],
        );
        let reply = crate::vcard::iq(state, &me, username, &iq).await;
        if reply.attr("type") == Some("result") {
            out.vcard = true;
        } else {
            out.skipped += 1;
        }
    }

    let count = |r: Result<(), ImportSkip>, n: &mut u32, skipped: &mut u32| match r {
        Ok(()) => *n += 1,
        Err(_) => *skipped += 1,
    };
    let configures: Vec<&Element> = children_named(user, "pubsub", NS_PUBSUB_OWNER)
        .into_iter()
        .flat_map(|p| children_named(p, "configure", NS_PUBSUB_OWNER))
        .collect();
    for configure in configures {
        let Some(node) = configure.attr("node") else {
            out.skipped += 1;
            continue;
        };
        let form = configure.get_child("x", NS_DATA);
        let r = pep::import_node(state, username, node, form).await?;
        count(r, &mut out.pep_nodes, &mut out.skipped);
    }
    let all_items: Vec<&Element> = children_named(user, "pubsub", NS_PUBSUB)
        .into_iter()
        .flat_map(|p| children_named(p, "items", NS_PUBSUB))
        .collect();
    for items in all_items {
        let Some(node) = items.attr("node") else {
            out.skipped += 1;
            continue;
        };
        if state.store.pep_node(username, node).await?.is_none() {
            let r = pep::import_node(state, username, node, None).await?;
            if r.is_err() {
                out.skipped += 1;
                continue;
            }
            out.pep_nodes += 1;
        }
        for item in children_named(items, "item", NS_PUBSUB) {
            let (Some(id), Some(payload)) = (item.attr("id"), item.children().next()) else {
                out.skipped += 1;
                continue;
            };
            let r = pep::import_item(state, username, node, id, payload).await?;
            count(r, &mut out.pep_items, &mut out.skipped);
        }
    }
    tracing::info!(
        user = %username,
        roster = out.roster_items,
        vcard = out.vcard,
        nodes = out.pep_nodes,
        items = out.pep_items,
        skipped = out.skipped,
        "account data imported"
    );
    Ok(out)
}

/// The first `<host><user/></host>` of a document.
fn first_user(root: &Element) -> Option<&Element> {
    children_named(root, "host", NS_PIE)
        .into_iter()
        .flat_map(|h| children_named(h, "user", NS_PIE))
        .next()
}

/// The children of `parent` named `name` in `ns`.
fn children_named<'a>(parent: &'a Element, name: &str, ns: &str) -> Vec<&'a Element> {
    parent.children().filter(|c| c.is(name, ns)).collect()
}

/// A roster entry from an exported `<item/>`; `None` for invalid ones and the account itself.
fn roster_item(item: &Element, own: &str) -> Option<RosterItem> {
    let jid = jid::BareJid::new(item.attr("jid")?).ok()?.to_string();
    if jid == own {
        return None;
    }
    let subscription = Subscription::parse(item.attr("subscription").unwrap_or("none"))?;
    let name = item
        .attr("name")
        .map(|n| n.chars().take(1024).collect::<String>())
        .filter(|n| !n.is_empty());
    let groups = item
        .children()
        .filter(|g| g.is("group", NS_ROSTER))
        .map(|g| g.text().chars().take(1024).collect::<String>())
        .filter(|g| !g.is_empty())
        .take(64)
        .collect();
    Some(RosterItem {
        contact: jid,
        name,
        subscription,
        ask_out: item.attr("ask") == Some("subscribe"),
        ask_in: false,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_entries_are_validated() {
        let ok: Element = "<item xmlns='jabber:iq:roster' jid='Bob@Example.com' name='Bob' subscription='both' ask='subscribe'><group>Friends</group></item>".parse().unwrap();
        let item = roster_item(&ok, "alice@example.com").unwrap();
        assert_eq!(item.contact, "bob@example.com");
        assert_eq!(item.subscription, Subscription::Both);
        assert!(item.ask_out);
        assert_eq!(item.groups, ["Friends"]);
        let own: Element = "<item xmlns='jabber:iq:roster' jid='alice@example.com'/>"
            .parse()
            .unwrap();
        assert!(roster_item(&own, "alice@example.com").is_none());
        let bad: Element = "<item xmlns='jabber:iq:roster' jid='a@@b'/>"
            .parse()
            .unwrap();
        assert!(roster_item(&bad, "alice@example.com").is_none());
        let remove: Element =
            "<item xmlns='jabber:iq:roster' jid='c@example.com' subscription='remove'/>"
                .parse()
                .unwrap();
        assert!(roster_item(&remove, "alice@example.com").is_none());
    }
}
