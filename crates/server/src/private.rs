//! Private XML Storage (XEP-0049): a user keeps arbitrary elements on the server, one per element
//! name and namespace (clients still use it for XEP-0048 bookmarks and preferences).

use crate::routing::Sender;
use crate::state::State;
use crate::xml::{self, el};
use minidom::Element;

/// `jabber:iq:private`.
pub const NS_PRIVATE: &str = "jabber:iq:private";
/// Largest element stored, serialized.
pub const MAX_ITEM_BYTES: usize = 64 * 1024;

/// Namespaces XEP-0049 §3 forbids storing under.
const RESERVED: &[&str] = &["jabber:client", "jabber:server", NS_PRIVATE];

/// Private storage IQs of a user about their own account.
pub async fn iq(state: &State, me: &Sender, iq: &Element) -> Element {
    let Some(query) = xml::payload(iq).filter(|q| q.is("query", NS_PRIVATE)) else {
        return xml::error_reply(iq, "bad-request", None);
    };
    let children: Vec<&Element> = query.children().collect();
    if let Some(reserved) = children
        .iter()
        .find(|c| RESERVED.contains(&c.ns().as_str()))
    {
        tracing::debug!(user = %me.username, ns = %reserved.ns(), "reserved private namespace");
        return xml::error_reply(iq, "not-acceptable", Some("This namespace is reserved"));
    }
    match (iq.attr("type"), children.as_slice()) {
        (Some("get"), [wanted]) => get(state, me, iq, wanted).await,
        (Some("set"), [_, ..]) => set(state, me, iq, &children).await,
        _ => xml::error_reply(
            iq,
            "bad-request",
            Some("A get names one element, a set carries at least one"),
        ),
    }
}

async fn get(state: &State, me: &Sender, iq: &Element, wanted: &Element) -> Element {
    if wanted.is("storage", crate::bookmarks::NS_LEGACY) {
        return match crate::bookmarks::legacy_get(state, me).await {
            Ok(storage) => xml::iq_result(iq, Some(el("query", NS_PRIVATE, &[], vec![storage]))),
            Err(e) => {
                tracing::error!(error = %e, user = %me.username, "bookmarks load failed");
                xml::error_reply(iq, "internal-server-error", None)
            }
        };
    }
    let ns = wanted.ns();
    let stored = match state
        .store
        .private_get(&me.username, wanted.name(), &ns)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, user = %me.username, "private storage load failed");
            return xml::error_reply(iq, "internal-server-error", None);
        }
    };
    let item = match stored.map(|text| text.parse::<Element>()) {
        None => el(wanted.name(), &ns, &[], vec![]),
        Some(Ok(item)) => item,
        Some(Err(e)) => {
            tracing::error!(error = %e, user = %me.username, "unreadable private storage item");
            return xml::error_reply(iq, "internal-server-error", None);
        }
    };
    xml::iq_result(iq, Some(el("query", NS_PRIVATE, &[], vec![item])))
}

async fn set(state: &State, me: &Sender, iq: &Element, items: &[&Element]) -> Element {
    let mut serialized = Vec::with_capacity(items.len());
    for item in items {
        let Ok(bytes) = snikket_xmpp::framing::writer::element_to_bytes(item) else {
            return xml::error_reply(iq, "bad-request", None);
        };
        if bytes.len() > MAX_ITEM_BYTES {
            return xml::error_reply(iq, "not-acceptable", Some("The element is too large"));
        }
        serialized.push((item, String::from_utf8_lossy(&bytes).into_owned()));
    }
    for (item, text) in serialized {
        // XEP-0048 bookmarks are kept as XEP-0402 items (see `bookmarks`).
        let stored = if item.is("storage", crate::bookmarks::NS_LEGACY) {
            crate::bookmarks::legacy_set(state, me, item).await
        } else {
            state
                .store
                .private_set(&me.username, item.name(), &item.ns(), &text)
                .await
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, user = %me.username, "private storage save failed");
            return xml::error_reply(iq, "internal-server-error", None);
        }
    }
    tracing::debug!(user = %me.username, count = items.len(), "private storage updated");
    xml::iq_result(iq, None)
}
