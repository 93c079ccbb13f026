//! Personal eventing (XEP-0163) on the XEP-0060 subset clients use: publish with
//! `publish-options` preconditions, retrieve, retract, create, configure, delete; access models
//! `presence`, `open` and `whitelist` (owner only); notifications filtered by each session's
//! `+notify` interests, learnt from its entity capabilities (XEP-0115), and the last item of each
//! node sent when a session's interests become known. This carries OMEMO device lists and
//! bundles, avatars (XEP-0084), nicknames (XEP-0172), vCard4 (XEP-0292) and bookmarks (XEP-0402).

use crate::routing::{target, Sender, Target};
use crate::state::{lock, State};
use crate::xml::{self, el, NS_CLIENT};
use minidom::Element;
use snikket_store::{PepItem, PepNode};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub mod remote;

/// `http://jabber.org/protocol/pubsub`.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// Owner use cases (configure, delete).
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const NS_DATA: &str = "jabber:x:data";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// Longest node name or item id accepted, in bytes.
const MAX_NAME: usize = 256;
/// Largest item payload accepted (serialized), in bytes: an avatar fits, a file does not.
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// Most nodes one account may have.
const MAX_NODES: usize = 256;
/// Most items a node keeps (`max_items = max`).
const MAX_ITEMS: i64 = 256;
/// Capability hashes remembered, and caps queries in flight, at most.
const MAX_CACHED: usize = 10_000;

/// Features a PEP service announces on the account's disco#info.
pub const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// The `<identity category='pubsub' type='pep'/>` of an account.
pub fn identity() -> Element {
    el(
        "identity",
        NS_DISCO_INFO,
        &[("category", "pubsub"), ("type", "pep")],
        vec![],
    )
}

/// A caps query in flight: (full JID, hash algorithm, ver, and for a session on another server
/// the local account it is a contact of).
type CapsQuery = (String, String, String, Option<String>);

/// In-memory PEP state: which nodes each session wants notifications for.
#[derive(Default)]
pub struct Pep {
    /// Full JID → nodes it has `+notify` for.
    interests: Mutex<HashMap<String, Arc<HashSet<String>>>>,
    /// Verified caps `ver` → its `+notify` nodes.
    caps: Mutex<HashMap<String, Arc<HashSet<String>>>>,
    /// Caps queries in flight, by IQ id.
    pending: Mutex<HashMap<String, CapsQuery>>,
    /// Sessions on other servers that get notifications: bare JID → full JID → the local
    /// accounts whose nodes it may see.
    remote: Mutex<HashMap<String, HashMap<String, HashSet<String>>>>,
    next_id: AtomicU64,
}

impl Pep {
    fn interested(&self, full: &str, node: &str) -> bool {
        lock(&self.interests)
            .get(full)
            .is_some_and(|n| n.contains(node))
    }

    /// Sets a session's interests; returns the nodes that are new to it.
    fn set_interests(&self, full: &str, nodes: Arc<HashSet<String>>) -> Vec<String> {
        let mut m = lock(&self.interests);
        let old = m.insert(full.to_string(), nodes.clone());
        nodes
            .iter()
            .filter(|n| !old.as_ref().is_some_and(|o| o.contains(*n)))
            .cloned()
            .collect()
    }

    /// Forgets a session.
    pub fn session_ended(&self, full: &str) {
        lock(&self.interests).remove(full);
    }
}

/// An error reply with a pubsub-specific condition (XEP-0060 §7.1.3 and friends).
fn error(iq: &Element, condition: &str, app: Option<&str>, text: Option<&str>) -> Element {
    let mut reply = xml::error_reply(iq, condition, text);
    if let (Some(app), Some(e)) = (app, reply.get_child_mut("error", NS_CLIENT)) {
        e.append_child(el(app, NS_ERRORS, &[], vec![]));
    }
    reply
}

fn internal(iq: &Element, e: impl std::fmt::Display) -> Element {
    tracing::error!(error = %e, "pep storage failed");
    xml::error_reply(iq, "internal-server-error", None)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && !s.chars().any(char::is_control)
}

/// The fields of a data form: var → first value.
fn form_fields(x: &Element) -> HashMap<String, String> {
    x.children()
        .filter(|f| f.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?.to_string();
            let value = f
                .get_child("value", NS_DATA)
                .map(Element::text)
                .unwrap_or_default();
            Some((var, value))
        })
        .collect()
}

/// A node configuration from a form, starting from `base`; an unknown value is an error text.
fn apply_options(
    base: &PepNode,
    fields: &HashMap<String, String>,
) -> Result<PepNode, &'static str> {
    let mut n = base.clone();
    for (var, value) in fields {
        match var.as_str() {
            "pubsub#access_model" => match value.as_str() {
                "presence" | "open" | "whitelist" => n.access_model = value.clone(),
                _ => return Err("Unsupported access model"),
            },
            "pubsub#max_items" => {
                n.max_items = if value == "max" {
                    MAX_ITEMS
                } else {
                    match value.parse::<i64>() {
                        Ok(v) if v >= 1 => v.min(MAX_ITEMS),
                        _ => return Err("max_items must be a positive number or 'max'"),
                    }
                }
            }
            "pubsub#persist_items" if !matches!(value.as_str(), "1" | "true") => {
                return Err("Items are always persisted")
            }
            _ => {}
        }
    }
    Ok(n)
}

fn default_node(node: &str) -> PepNode {
    PepNode {
        node: node.to_string(),
        access_model: "presence".into(),
        max_items: 1,
    }
}

fn pubsub_child<'a>(iq: &'a Element, ns: &str) -> Option<&'a Element> {
    xml::payload(iq)
        .filter(|p| p.is("pubsub", ns))
        .and_then(|p| p.children().next())
}

/// IQs with a pubsub payload to the user's own account; `None` if the payload is not pubsub.
pub async fn owner_iq(state: &State, me: &Sender, iq: &Element) -> Option<Element> {
    let set = iq.attr("type") == Some("set");
    if let Some(op) = pubsub_child(iq, NS_PUBSUB) {
        return Some(match (set, op.name()) {
            (true, "publish") => publish(state, me, iq).await,
            (true, "retract") => retract(state, me, iq, op).await,
            (true, "create") => create(state, me, iq, op).await,
            (false, "items") => items(state, &me.username, me, iq, op).await,
            _ => error(
                iq,
                "feature-not-implemented",
                Some("unsupported"),
                Some("Not supported by this PEP service"),
            ),
        });
    }
    let op = pubsub_child(iq, NS_PUBSUB_OWNER)?;
    Some(match (set, op.name()) {
        (_, "configure") => configure(state, me, iq, op, set).await,
        (true, "delete") => delete(state, me, iq, op).await,
        _ => error(iq, "feature-not-implemented", Some("unsupported"), None),
    })
}

/// Pubsub IQs to another local account's bare JID: retrieval only.
pub async fn contact_iq(state: &State, me: &Sender, owner: &str, iq: &Element) -> Option<Element> {
    if let Some(op) = pubsub_child(iq, NS_PUBSUB) {
        if iq.attr("type") == Some("get") && op.name() == "items" {
            return Some(items(state, owner, me, iq, op).await);
        }
        return Some(xml::error_reply(iq, "forbidden", None));
    }
    pubsub_child(iq, NS_PUBSUB_OWNER).map(|_| xml::error_reply(iq, "forbidden", None))
}

async fn publish(state: &State, me: &Sender, iq: &Element) -> Element {
    let Some(ps) = xml::payload(iq) else {
        return xml::error_reply(iq, "bad-request", None);
    };
    let Some(op) = ps.get_child("publish", NS_PUBSUB) else {
        return xml::error_reply(iq, "bad-request", None);
    };
    let node_name = op.attr("node").unwrap_or_default();
    if !valid_name(node_name) {
        return error(iq, "not-acceptable", Some("nodeid-required"), None);
    }
    let items: Vec<&Element> = op.children().filter(|c| c.is("item", NS_PUBSUB)).collect();
    let [item] = items.as_slice() else {
        return error(iq, "bad-request", Some("invalid-payload"), None);
    };
    let mut payloads = item.children();
    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
        return error(iq, "bad-request", Some("payload-required"), None);
    };
    let id = match item.attr("id") {
        Some(id) if valid_name(id) => id.to_string(),
        Some(_) => return error(iq, "not-acceptable", Some("item-forbidden"), None),
        None => format!("{:016x}", rand::random::<u64>()),
    };
    let serialized = String::from(payload);
    if serialized.len() > MAX_PAYLOAD {
        return error(iq, "not-acceptable", Some("payload-too-big"), None);
    }
    let options = ps
        .get_child("publish-options", NS_PUBSUB)
        .and_then(|o| o.get_child("x", NS_DATA))
        .map(form_fields)
        .unwrap_or_default();
    if options
        .get("FORM_TYPE")
        .is_some_and(|t| t != FORM_PUBLISH_OPTIONS)
    {
        return xml::error_reply(iq, "bad-request", Some("Unknown publish-options form"));
    }
    let node = match state.store.pep_node(&me.username, node_name).await {
        Err(e) => return internal(iq, e),
        Ok(Some(existing)) => match apply_options(&existing, &options) {
            Ok(wanted) if wanted == existing => existing,
            _ => {
                return error(
                    iq,
                    "conflict",
                    Some("precondition-not-met"),
                    Some("The node's configuration differs from the publish options"),
                )
            }
        },
        Ok(None) => {
            let node = match apply_options(&default_node(node_name), &options) {
                Ok(n) => n,
                Err(why) => return error(iq, "conflict", Some("precondition-not-met"), Some(why)),
            };
            if let Err(reply) = create_node(state, me, iq, &node).await {
                return reply;
            }
            node
        }
    };
    if let Err(e) = store_and_notify(state, &me.username, &node, &id, payload, &serialized).await {
        return internal(iq, e);
    }
    let ack = el(
        "pubsub",
        NS_PUBSUB,
        &[],
        vec![el(
            "publish",
            NS_PUBSUB,
            &[("node", node_name)],
            vec![el("item", NS_PUBSUB, &[("id", &id)], vec![])],
        )],
    );
    xml::iq_result(iq, Some(ack))
}

/// Stores an item and notifies the interested sessions.
async fn store_and_notify(
    state: &State,
    owner: &str,
    node: &PepNode,
    id: &str,
    payload: &Element,
    serialized: &str,
) -> Result<(), snikket_store::StoreError> {
    state.store.pep_publish(owner, node, id, serialized).await?;
    let item_el = el("item", NS_EVENT, &[("id", id)], vec![payload.clone()]);
    notify(state, owner, node, item_el).await;
    Ok(())
}

/// Publishes on the server's behalf (legacy vCard, bookmarks conversion): the node is created
/// with `defaults` when missing, an existing node keeps its configuration.
pub async fn publish_as(
    state: &State,
    owner: &str,
    node_name: &str,
    defaults: &[(&str, &str)],
    id: &str,
    payload: &Element,
) -> Result<(), snikket_store::StoreError> {
    let node = match state.store.pep_node(owner, node_name).await? {
        Some(n) => n,
        None => {
            let fields = defaults
                .iter()
                .map(|(k, v)| (format!("pubsub#{k}"), v.to_string()))
                .collect();
            let node = apply_options(&default_node(node_name), &fields)
                .unwrap_or_else(|_| default_node(node_name));
            state.store.pep_put_node(owner, &node).await?;
            node
        }
    };
    store_and_notify(state, owner, &node, id, payload, &String::from(payload)).await
}

/// Why an imported node or item was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportSkip {
    /// A node name or item id that is empty, too long or has control characters.
    BadName,
    /// A configuration this service does not support.
    BadConfig,
    /// The account has as many nodes as allowed.
    TooManyNodes,
    /// The payload is larger than `MAX_PAYLOAD`.
    TooBig,
}

/// Creates or reconfigures `owner`'s node from an imported node configuration form (XEP-0227).
pub async fn import_node(
    state: &State,
    owner: &str,
    node_name: &str,
    config: Option<&Element>,
) -> Result<Result<(), ImportSkip>, snikket_store::StoreError> {
    if !valid_name(node_name) {
        return Ok(Err(ImportSkip::BadName));
    }
    let existing = state.store.pep_node(owner, node_name).await?;
    if existing.is_none() && state.store.pep_nodes(owner).await?.len() >= MAX_NODES {
        return Ok(Err(ImportSkip::TooManyNodes));
    }
    let base = existing.unwrap_or_else(|| default_node(node_name));
    let fields = config.map(form_fields).unwrap_or_default();
    match apply_options(&base, &fields) {
        Ok(node) => {
            state.store.pep_put_node(owner, &node).await?;
            Ok(Ok(()))
        }
        Err(_) => Ok(Err(ImportSkip::BadConfig)),
    }
}

/// Stores an imported item (XEP-0227) in an existing node, notifying like a publish.
pub async fn import_item(
    state: &State,
    owner: &str,
    node_name: &str,
    id: &str,
    payload: &Element,
) -> Result<Result<(), ImportSkip>, snikket_store::StoreError> {
    if !valid_name(id) {
        return Ok(Err(ImportSkip::BadName));
    }
    let serialized = String::from(payload);
    if serialized.len() > MAX_PAYLOAD {
        return Ok(Err(ImportSkip::TooBig));
    }
    let Some(node) = state.store.pep_node(owner, node_name).await? else {
        return Ok(Err(ImportSkip::BadName));
    };
    store_and_notify(state, owner, &node, id, payload, &serialized).await?;
    Ok(Ok(()))
}

/// Retracts on the server's behalf, notifying; `false` if there was no such item.
pub async fn retract_as(
    state: &State,
    owner: &str,
    node_name: &str,
    id: &str,
) -> Result<bool, snikket_store::StoreError> {
    let Some(node) = state.store.pep_node(owner, node_name).await? else {
        return Ok(false);
    };
    if !state.store.pep_retract(owner, node_name, id).await? {
        return Ok(false);
    }
    notify(
        state,
        owner,
        &node,
        el("retract", NS_EVENT, &[("id", id)], vec![]),
    )
    .await;
    Ok(true)
}

/// The items of `owner`'s node that `reader` may see, oldest first: `Ok(None)` when the node
/// does not exist, `Err(reply)` when the reader is not allowed.
pub async fn read_items(
    state: &State,
    owner: &str,
    reader: &Sender,
    node_name: &str,
    iq: &Element,
) -> Result<Option<Vec<(String, Element)>>, Element> {
    let node = match state.store.pep_node(owner, node_name).await {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(None),
        Err(e) => return Err(internal(iq, e)),
    };
    may_read(state, owner, reader, &node, iq).await?;
    let mut found = state
        .store
        .pep_items(owner, node_name, &[], MAX_ITEMS)
        .await
        .map_err(|e| internal(iq, e))?;
    found.reverse();
    Ok(Some(
        found
            .into_iter()
            .filter_map(|i| Some((i.id.clone(), i.payload.parse::<Element>().ok()?)))
            .collect(),
    ))
}

async fn create_node(
    state: &State,
    me: &Sender,
    iq: &Element,
    node: &PepNode,
) -> Result<(), Element> {
    match state.store.pep_nodes(&me.username).await {
        Ok(n) if n.len() >= MAX_NODES => {
            return Err(xml::error_reply(
                iq,
                "resource-constraint",
                Some("Too many nodes"),
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(internal(iq, e)),
    }
    state
        .store
        .pep_put_node(&me.username, node)
        .await
        .map_err(|e| internal(iq, e))
}

async fn create(state: &State, me: &Sender, iq: &Element, op: &Element) -> Element {
    let name = op.attr("node").unwrap_or_default();
    if !valid_name(name) {
        return error(iq, "not-acceptable", Some("nodeid-required"), None);
    }
    match state.store.pep_node(&me.username, name).await {
        Ok(Some(_)) => return xml::error_reply(iq, "conflict", None),
        Ok(None) => {}
        Err(e) => return internal(iq, e),
    }
    let fields = xml::payload(iq)
        .and_then(|p| p.get_child("configure", NS_PUBSUB))
        .and_then(|c| c.get_child("x", NS_DATA))
        .map(form_fields)
        .unwrap_or_default();
    let node = match apply_options(&default_node(name), &fields) {
        Ok(n) => n,
        Err(why) => return xml::error_reply(iq, "not-acceptable", Some(why)),
    };
    match create_node(state, me, iq, &node).await {
        Ok(()) => xml::iq_result(iq, None),
        Err(reply) => reply,
    }
}

/// Whether `reader` may see `owner`'s node; the error to answer otherwise.
async fn may_read(
    state: &State,
    owner: &str,
    reader: &Sender,
    node: &PepNode,
    iq: &Element,
) -> Result<(), Element> {
    if reader.username == owner || node.access_model == "open" {
        return Ok(());
    }
    if node.access_model == "presence" {
        match state.store.roster_item(owner, &reader.bare).await {
            Ok(Some(i)) if i.subscription.has_from() => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(internal(iq, e)),
        }
        return Err(error(
            iq,
            "not-authorized",
            Some("presence-subscription-required"),
            None,
        ));
    }
    Err(error(iq, "not-allowed", Some("closed-node"), None))
}

async fn items(state: &State, owner: &str, me: &Sender, iq: &Element, op: &Element) -> Element {
    let name = op.attr("node").unwrap_or_default();
    let node = match state.store.pep_node(owner, name).await {
        Ok(Some(n)) => n,
        Ok(None) => return xml::error_reply(iq, "item-not-found", None),
        Err(e) => return internal(iq, e),
    };
    if let Err(reply) = may_read(state, owner, me, &node, iq).await {
        return reply;
    }
    let ids: Vec<String> = op
        .children()
        .filter(|c| c.is("item", NS_PUBSUB))
        .filter_map(|c| c.attr("id").map(str::to_string))
        .collect();
    let limit = op
        .attr("max_items")
        .and_then(|m| m.parse::<i64>().ok())
        .unwrap_or(MAX_ITEMS)
        .clamp(0, MAX_ITEMS);
    let mut found = match state.store.pep_items(owner, name, &ids, limit).await {
        Ok(f) => f,
        Err(e) => return internal(iq, e),
    };
    found.reverse();
    let children = found
        .into_iter()
        .filter_map(|i| item_el(NS_PUBSUB, &i))
        .collect();
    let result = el(
        "pubsub",
        NS_PUBSUB,
        &[],
        vec![el("items", NS_PUBSUB, &[("node", name)], children)],
    );
    xml::iq_result(iq, Some(result))
}

fn item_el(ns: &str, item: &PepItem) -> Option<Element> {
    match item.payload.parse::<Element>() {
        Ok(p) => Some(el("item", ns, &[("id", &item.id)], vec![p])),
        Err(e) => {
            tracing::warn!(error = %e, node = %item.node, "unreadable stored PEP item skipped");
            None
        }
    }
}

async fn retract(state: &State, me: &Sender, iq: &Element, op: &Element) -> Element {
    let name = op.attr("node").unwrap_or_default();
    let node = match state.store.pep_node(&me.username, name).await {
        Ok(Some(n)) => n,
        Ok(None) => return xml::error_reply(iq, "item-not-found", None),
        Err(e) => return internal(iq, e),
    };
    let Some(id) = op.get_child("item", NS_PUBSUB).and_then(|i| i.attr("id")) else {
        return error(iq, "bad-request", Some("item-required"), None);
    };
    match state.store.pep_retract(&me.username, name, id).await {
        Ok(true) => {}
        Ok(false) => return xml::error_reply(iq, "item-not-found", None),
        Err(e) => return internal(iq, e),
    }
    if matches!(op.attr("notify"), Some("1" | "true")) {
        let r = el("retract", NS_EVENT, &[("id", id)], vec![]);
        notify(state, &me.username, &node, r).await;
    }
    xml::iq_result(iq, None)
}

fn config_form(node: &PepNode) -> Element {
    let field = |var: &str, value: &str| {
        el(
            "field",
            NS_DATA,
            &[("var", var)],
            vec![xml::text_el("value", NS_DATA, value)],
        )
    };
    let mut form_type = field("FORM_TYPE", FORM_NODE_CONFIG);
    xml::set_attr(&mut form_type, "type", "hidden");
    el(
        "x",
        NS_DATA,
        &[("type", "form")],
        vec![
            form_type,
            field("pubsub#access_model", &node.access_model),
            field("pubsub#max_items", &node.max_items.to_string()),
            field("pubsub#persist_items", "true"),
        ],
    )
}

async fn configure(state: &State, me: &Sender, iq: &Element, op: &Element, set: bool) -> Element {
    let name = op.attr("node").unwrap_or_default();
    let node = match state.store.pep_node(&me.username, name).await {
        Ok(Some(n)) => n,
        Ok(None) => return xml::error_reply(iq, "item-not-found", None),
        Err(e) => return internal(iq, e),
    };
    if !set {
        let c = el(
            "configure",
            NS_PUBSUB_OWNER,
            &[("node", name)],
            vec![config_form(&node)],
        );
        return xml::iq_result(iq, Some(el("pubsub", NS_PUBSUB_OWNER, &[], vec![c])));
    }
    let fields = op
        .get_child("x", NS_DATA)
        .map(form_fields)
        .unwrap_or_default();
    match apply_options(&node, &fields) {
        Ok(n) => match state.store.pep_put_node(&me.username, &n).await {
            Ok(()) => xml::iq_result(iq, None),
            Err(e) => internal(iq, e),
        },
        Err(why) => xml::error_reply(iq, "not-acceptable", Some(why)),
    }
}

async fn delete(state: &State, me: &Sender, iq: &Element, op: &Element) -> Element {
    let name = op.attr("node").unwrap_or_default();
    let node = match state.store.pep_node(&me.username, name).await {
        Ok(Some(n)) => n,
        Ok(None) => return xml::error_reply(iq, "item-not-found", None),
        Err(e) => return internal(iq, e),
    };
    if let Err(e) = state.store.pep_delete_node(&me.username, name).await {
        return internal(iq, e);
    }
    let d = el("delete", NS_EVENT, &[("node", name)], vec![]);
    deliver_event(state, &me.username, &node, |_| {
        el("event", NS_EVENT, &[], vec![d.clone()])
    })
    .await;
    xml::iq_result(iq, None)
}

/// Sends `<items node><child/></items>` to every interested session allowed to see the node.
async fn notify(state: &State, owner: &str, node: &PepNode, child: Element) {
    let items = el("items", NS_EVENT, &[("node", &node.node)], vec![child]);
    deliver_event(state, owner, node, |_| {
        el("event", NS_EVENT, &[], vec![items.clone()])
    })
    .await;
}

async fn deliver_event(
    state: &State,
    owner: &str,
    node: &PepNode,
    event: impl Fn(&str) -> Element + Sync,
) {
    let domain = &state.config.domain.ascii;
    let owner_bare = format!("{owner}@{domain}");
    let mut users = vec![owner.to_string()];
    let mut remote_contacts = Vec::new();
    if node.access_model != "whitelist" {
        match state.store.roster_items(owner).await {
            Ok(roster) => {
                for item in roster.iter().filter(|i| i.subscription.has_from()) {
                    match target(state, &item.contact) {
                        Target::Local { username, .. } => users.push(username),
                        Target::Remote(_) => remote_contacts.push(item.contact.clone()),
                        _ => {}
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "roster load for PEP notification failed"),
        }
    }
    if !remote_contacts.is_empty() {
        remote::notify(state, owner, &owner_bare, node, &remote_contacts, &event).await;
    }
    for user in users {
        if crate::blocking::blocks_local(state, owner, &user).await {
            continue;
        }
        for resource in state.router.available_resources(&user) {
            let full = format!("{user}@{domain}/{resource}");
            if state.pep.interested(&full, &node.node) {
                let msg = event_message(state, &owner_bare, &full, event(&full));
                state.router.to_resource(&user, &resource, msg);
            }
        }
    }
}

/// The notification of `item` as the last one of its node, for `to`.
fn last_item_message(state: &State, from: &str, to: &str, item: &PepItem) -> Option<Element> {
    let i = item_el(NS_EVENT, item)?;
    let items = el("items", NS_EVENT, &[("node", &item.node)], vec![i]);
    Some(event_message(
        state,
        from,
        to,
        el("event", NS_EVENT, &[], vec![items]),
    ))
}

fn event_message(state: &State, from: &str, to: &str, event: Element) -> Element {
    let id = format!("pep{}", state.pep.next_id.fetch_add(1, Ordering::Relaxed));
    el(
        "message",
        NS_CLIENT,
        &[
            ("from", from),
            ("to", to),
            ("type", "headline"),
            ("id", &id),
        ],
        vec![event],
    )
}

/// The nodes of `owner` that `reader` may see, as disco#items entries.
pub async fn disco_items(state: &State, owner: &str, reader: &Sender) -> Vec<Element> {
    let owner_bare = format!("{owner}@{}", state.config.domain.ascii);
    let nodes = match state.store.pep_nodes(owner).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "pep node list failed");
            return Vec::new();
        }
    };
    let subscribed = reader.username == owner
        || matches!(state.store.roster_item(owner, &reader.bare).await, Ok(Some(i)) if i.subscription.has_from());
    nodes
        .into_iter()
        .filter(|n| {
            reader.username == owner
                || n.access_model == "open"
                || (n.access_model == "presence" && subscribed)
        })
        .map(|n| {
            el(
                "item",
                "http://jabber.org/protocol/disco#items",
                &[("jid", &owner_bare), ("node", &n.node)],
                vec![],
            )
        })
        .collect()
}

/// Available presence from a session: learn its `+notify` interests from its capabilities.
pub async fn presence(state: &State, me: &Sender, stanza: &Element) {
    let Some(c) = stanza.get_child("c", NS_CAPS) else {
        state.pep.session_ended(&me.full);
        return;
    };
    match learn_caps(state, c, &me.full, &state.config.domain.ascii, None) {
        Some(Ok(nodes)) => interests_known(state, me, nodes).await,
        Some(Err(iq)) => {
            state.router.to_resource(&me.username, &me.resource, iq);
        }
        None => {}
    }
}

/// What a session's `<c/>` says it wants: `Ok` when the hash is known, else `Err` with the
/// disco#info query (from `from`) to send it; `None` for incomplete caps. `owner` is the local
/// account a session on another server is a contact of.
fn learn_caps(
    state: &State,
    c: &Element,
    full: &str,
    from: &str,
    owner: Option<&str>,
) -> Option<Result<Arc<HashSet<String>>, Element>> {
    let (Some(hash), Some(node), Some(ver)) = (c.attr("hash"), c.attr("node"), c.attr("ver"))
    else {
        return None;
    };
    if let Some(nodes) = lock(&state.pep.caps).get(ver).cloned() {
        return Some(Ok(nodes));
    }
    let query = (
        full.to_string(),
        hash.to_string(),
        ver.to_string(),
        owner.map(str::to_string),
    );
    Some(Err(caps_query(state, from, node, query)))
}

/// A disco#info query from `from` for the `node#ver` of a session's caps, remembered as pending
/// until its answer comes back to [`iq_response`].
fn caps_query(state: &State, from: &str, node: &str, query: CapsQuery) -> Element {
    let id = format!("caps{}", state.pep.next_id.fetch_add(1, Ordering::Relaxed));
    let (to, ver) = (query.0.clone(), query.2.clone());
    {
        let mut pending = lock(&state.pep.pending);
        if pending.len() >= MAX_CACHED {
            pending.clear();
        }
        pending.insert(id.clone(), query);
    }
    el(
        "iq",
        NS_CLIENT,
        &[("type", "get"), ("id", &id), ("from", from), ("to", &to)],
        vec![el(
            "query",
            NS_DISCO_INFO,
            &[("node", &format!("{node}#{ver}"))],
            vec![],
        )],
    )
}

/// An IQ result or error addressed to the server: the answer to a caps query, if it is one.
pub async fn iq_response(state: &State, me: &Sender, iq: &Element) {
    let Some(id) = iq.attr("id") else { return };
    let Some((full, hash, ver, owner)) = lock(&state.pep.pending).remove(id) else {
        return;
    };
    if full != me.full || iq.attr("type") != Some("result") {
        return;
    }
    let Some(query) = iq.get_child("query", NS_DISCO_INFO) else {
        return;
    };
    let nodes: HashSet<String> = query
        .children()
        .filter(|f| f.is("feature", NS_DISCO_INFO))
        .filter_map(|f| f.attr("var")?.strip_suffix("+notify").map(str::to_string))
        .collect();
    let nodes = Arc::new(nodes);
    if caps_verify(query, &hash, &ver) {
        let mut caps = lock(&state.pep.caps);
        if caps.len() >= MAX_CACHED {
            caps.clear();
        }
        caps.insert(ver, nodes.clone());
    } else {
        tracing::debug!(jid = %me.full, "caps hash mismatch; interests used for this session only");
    }
    match owner {
        Some(owner) => remote::interests_known(state, &owner, &full, nodes).await,
        None => interests_known(state, me, nodes).await,
    }
}

/// Whether a disco#info result hashes to the advertised `ver` (XEP-0115 §5.1).
fn caps_verify(query: &Element, hash: &str, ver: &str) -> bool {
    caps_ver(query, hash).is_some_and(|v| v == ver)
}

/// The XEP-0115 §5.1 verification string of a disco#info query, hashed with `hash` (`sha-1` or
/// `sha-256`) and base64-encoded; `None` for other algorithms. Written out here because
/// xmpp-parsers 0.23 sorts each item with its `<` separator appended, which orders
/// `x+notify` before `x` and so disagrees with every client that has a `+notify` feature.
pub fn caps_ver(query: &Element, hash: &str) -> Option<String> {
    use sha2::Digest as _;
    let s = caps_string(query);
    let digest = match hash {
        "sha-1" => sha1::Sha1::digest(s.as_bytes()).to_vec(),
        "sha-256" => sha2::Sha256::digest(s.as_bytes()).to_vec(),
        _ => return None,
    };
    Some(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        digest,
    ))
}

/// A form field for hashing: var and sorted values.
type Field = (String, Vec<String>);

fn caps_string(query: &Element) -> String {
    let mut identities: Vec<[String; 4]> = query
        .children()
        .filter(|c| c.is("identity", NS_DISCO_INFO))
        .map(|i| {
            let attr = |n: &str| i.attr(n).unwrap_or_default().to_string();
            [
                attr("category"),
                attr("type"),
                attr("xml:lang"),
                attr("name"),
            ]
        })
        .collect();
    identities.sort();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", NS_DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort_unstable();
    let mut forms: Vec<(String, Vec<Field>)> = query
        .children()
        .filter(|c| c.is("x", NS_DATA))
        .filter_map(|x| {
            let mut form_type = None;
            let mut fields = Vec::new();
            for f in x.children().filter(|f| f.is("field", NS_DATA)) {
                let mut values: Vec<String> = f
                    .children()
                    .filter(|v| v.is("value", NS_DATA))
                    .map(Element::text)
                    .collect();
                match f.attr("var") {
                    Some("FORM_TYPE") => form_type = values.pop(),
                    Some(var) => {
                        values.sort();
                        fields.push((var.to_string(), values));
                    }
                    None => {}
                }
            }
            fields.sort();
            Some((form_type?, fields))
        })
        .collect();
    forms.sort();
    let mut s = String::new();
    for [category, kind, lang, name] in identities {
        s.push_str(&format!("{category}/{kind}/{lang}/{name}<"));
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (form_type, fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    s
}

/// A session's interests are known: remember them and send it the last item of every newly
/// wanted node it may see, its own account's and those of contacts whose presence it receives.
async fn interests_known(state: &State, me: &Sender, nodes: Arc<HashSet<String>>) {
    let new = state.pep.set_interests(&me.full, nodes);
    if new.is_empty() {
        return;
    }
    let domain = &state.config.domain.ascii;
    let mut owners = vec![me.username.clone()];
    match state.store.roster_items(&me.username).await {
        Ok(roster) => owners.extend(
            roster
                .iter()
                .filter(|i| i.subscription.has_to())
                .filter_map(|i| match target(state, &i.contact) {
                    Target::Local { username, .. } => Some(username),
                    _ => None,
                }),
        ),
        Err(e) => tracing::error!(error = %e, "roster load for PEP last items failed"),
    }
    for owner in owners {
        if crate::blocking::blocks_local(state, &owner, &me.username).await {
            continue;
        }
        let last = match state.store.pep_last_items(&owner).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "pep last items failed");
                continue;
            }
        };
        let owner_bare = format!("{owner}@{domain}");
        for (access, item) in last {
            let visible = owner == me.username || access != "whitelist";
            if !visible || !new.contains(&item.node) {
                continue;
            }
            let Some(msg) = last_item_message(state, &owner_bare, &me.full, &item) else {
                continue;
            };
            state.router.to_resource(&me.username, &me.resource, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn publish_options_build_and_check_configurations() {
        let base = default_node("n");
        let open = apply_options(&base, &fields(&[("pubsub#access_model", "open")])).unwrap();
        assert_eq!(open.access_model, "open");
        assert_eq!(open.max_items, 1);
        let max = apply_options(&base, &fields(&[("pubsub#max_items", "max")])).unwrap();
        assert_eq!(max.max_items, MAX_ITEMS);
        let huge = apply_options(&base, &fields(&[("pubsub#max_items", "100000")])).unwrap();
        assert_eq!(huge.max_items, MAX_ITEMS, "clamped");
        for bad in [
            ("pubsub#access_model", "authorize"),
            ("pubsub#max_items", "0"),
            ("pubsub#max_items", "-3"),
            ("pubsub#max_items", "many"),
            ("pubsub#persist_items", "false"),
        ] {
            assert!(apply_options(&base, &fields(&[bad])).is_err(), "{bad:?}");
        }
        // Unknown options and the ones we always satisfy pass.
        let same = apply_options(
            &base,
            &fields(&[
                ("FORM_TYPE", FORM_PUBLISH_OPTIONS),
                ("pubsub#persist_items", "true"),
                ("pubsub#send_last_published_item", "never"),
            ]),
        )
        .unwrap();
        assert_eq!(same, base);
    }

    #[test]
    fn names_are_bounded() {
        assert!(valid_name("urn:xmpp:avatar:data"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"n".repeat(MAX_NAME + 1)));
        assert!(!valid_name("a\u{7}b"));
    }

    #[test]
    fn caps_hash_is_verified() {
        let info: Element = "<query xmlns='http://jabber.org/protocol/disco#info' node='n#v'>\
            <identity category='client' type='pc' name='Exodus 0.9.1'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/></query>"
            .parse()
            .unwrap();
        // XEP-0115 §5.2's worked example.
        assert!(caps_verify(&info, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0="));
        assert!(!caps_verify(&info, "sha-1", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="));
        assert!(!caps_verify(&info, "md4", "QgayPKawpkPSDYmwT/WM94uAlu0="));
        // What slixmpp 1.8 answers (its node attribute included).
        let slix: Element = r#"<query xmlns="http://jabber.org/protocol/disco#info" node="http://slixmpp.com/ver/1.8.3#VCr2iTK+Iuit7khyikuRyokqU2A="><identity category="client" type="bot" /><feature var="eu.siacs.conversations.axolotl.devicelist+notify" /><feature var="urn:xmpp:avatar:metadata+notify" /><feature var="http://jabber.org/protocol/disco#info" /><feature var="urn:xmpp:ping" /><feature var="jabber:x:data" /><feature var="http://jabber.org/protocol/shim" /><feature var="http://jabber.org/protocol/shim#SubID" /><feature var="http://jabber.org/protocol/caps" /><feature var="urn:xmpp:avatar:metadata" /><feature var="vcard-temp" /></query>"#
            .parse()
            .unwrap();
        assert!(caps_verify(&slix, "sha-1", "VCr2iTK+Iuit7khyikuRyokqU2A="));
    }

    #[test]
    fn interests_report_only_new_nodes() {
        let pep = Pep::default();
        let set = |v: &[&str]| Arc::new(v.iter().map(|s| s.to_string()).collect::<HashSet<_>>());
        assert_eq!(
            pep.set_interests("a@x/1", set(&["n1"])),
            vec!["n1".to_string()]
        );
        assert!(pep.set_interests("a@x/1", set(&["n1"])).is_empty());
        assert_eq!(
            pep.set_interests("a@x/1", set(&["n1", "n2"])),
            vec!["n2".to_string()]
        );
        assert!(pep.interested("a@x/1", "n2"));
        pep.session_ended("a@x/1");
        assert!(!pep.interested("a@x/1", "n1"));
    }
}
