//! IQ handlers, one dispatch `match` on the payload namespace (RFC 6121 roster, XEP-0030 disco,
//! XEP-0199 ping, XEP-0092 version, XEP-0202 time, XEP-0012 last activity, XEP-0077 register).

use crate::routing::{push_item, Sender};
use crate::state::State;
use crate::xml::{self, el, text_el};
use minidom::Element;
use snikket_store::{RosterItem, Subscription};

/// `jabber:iq:roster`.
pub const NS_ROSTER: &str = "jabber:iq:roster";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PING: &str = "urn:xmpp:ping";
const NS_VERSION: &str = "jabber:iq:version";
const NS_TIME: &str = "urn:xmpp:time";
const NS_LAST: &str = "jabber:iq:last";
const NS_REGISTER: &str = "jabber:iq:register";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// The XEP-0115 node our capabilities are published under.
pub const CAPS_NODE: &str = "https://snikket.org/";

/// Features the server itself announces (kept to what is really implemented).
const SERVER_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_VERSION,
    NS_TIME,
    NS_LAST,
    NS_ROSTER,
    NS_CAPS,
    "urn:xmpp:pars:0",
    "urn:xmpp:invite",
    "msgoffline",
    NS_CARBONS,
    crate::extdisco::NS_EXTDISCO,
    crate::private::NS_PRIVATE,
    crate::blocking::NS_BLOCKING,
    // XEP-0377: reports carried in blocking commands.
    crate::blocking::NS_REPORTING_0,
    crate::blocking::REPORTING_REASONS_0[0],
    crate::blocking::REPORTING_REASONS_0[1],
    crate::blocking::NS_REPORTING_1,
];

const NS_CARBONS: &str = "urn:xmpp:carbons:2";

/// Message Carbons (XEP-0280) on or off for the sending session.
fn carbons(state: &State, me: &Sender, iq: &Element) -> Option<Element> {
    let p = xml::payload(iq)?;
    if iq.attr("type") != Some("set") || p.ns() != NS_CARBONS {
        return None;
    }
    let on = match p.name() {
        "enable" => true,
        "disable" => false,
        _ => return Some(xml::error_reply(iq, "bad-request", None)),
    };
    state.router.set_carbons(&me.username, &me.resource, on);
    Some(xml::iq_result(iq, None))
}

fn ns_of(iq: &Element) -> String {
    xml::payload(iq).map(Element::ns).unwrap_or_default()
}

/// IQs addressed to the server (`to` = our domain).
pub async fn server_iq(state: &State, me: &Sender, iq: &Element) -> Element {
    let get = iq.attr("type") == Some("get");
    match (get, ns_of(iq).as_str()) {
        (true, NS_PING) => xml::iq_result(iq, None),
        (true, NS_DISCO_INFO) => match xml::payload(iq).and_then(|q| q.attr("node")) {
            None => xml::iq_result(iq, Some(server_disco(&state.config, None))),
            // XEP-0115 §6.2: the node#ver of our caps answers with the same information.
            Some(node) if Some(node) == state.caps_node.as_deref() => {
                xml::iq_result(iq, Some(server_disco(&state.config, Some(node))))
            }
            Some(_) => xml::error_reply(iq, "item-not-found", None),
        },
        (true, NS_DISCO_ITEMS) => {
            // The services on subdomains: circle group chats and file sharing.
            let items = [state.config.groups_domain(), state.config.share_domain()]
                .iter()
                .map(|jid| el("item", NS_DISCO_ITEMS, &[("jid", jid)], vec![]))
                .collect();
            xml::iq_result(iq, Some(el("query", NS_DISCO_ITEMS, &[], items)))
        }
        (true, NS_VERSION) => xml::iq_result(
            iq,
            Some(el(
                "query",
                NS_VERSION,
                &[],
                vec![
                    text_el("name", NS_VERSION, "Snikket"),
                    text_el("version", NS_VERSION, env!("CARGO_PKG_VERSION")),
                ],
            )),
        ),
        (true, NS_TIME) => xml::iq_result(iq, Some(time_el())),
        (true, NS_LAST) => {
            let secs = state.started.elapsed().as_secs().to_string();
            xml::iq_result(
                iq,
                Some(el("query", NS_LAST, &[("seconds", &secs)], vec![])),
            )
        }
        (true, crate::extdisco::NS_EXTDISCO) => crate::extdisco::services(state, iq),
        (true, crate::vcard::NS_VCARD) => crate::vcard::server(state, iq),
        (_, NS_ROSTER) | (_, NS_REGISTER) | (_, NS_CARBONS) => account_iq(state, me, iq).await,
        _ => xml::error_reply(iq, "service-unavailable", None),
    }
}

/// The server's XEP-0115 capabilities: the `<c/>` element for stream features and the
/// `node#ver` string its disco#info answers to. `None` only if hashing failed (never expected).
pub fn server_caps(config: &snikket_config::Config) -> Option<(Element, String)> {
    let ver = crate::pep::caps_ver(&server_disco(config, None), "sha-1")?;
    let c = el(
        "c",
        NS_CAPS,
        &[("hash", "sha-1"), ("node", CAPS_NODE), ("ver", &ver)],
        vec![],
    );
    Some((c, format!("{CAPS_NODE}#{ver}")))
}

fn server_disco(config: &snikket_config::Config, node: Option<&str>) -> Element {
    let mut children = vec![el(
        "identity",
        NS_DISCO_INFO,
        &[
            ("category", "server"),
            ("type", "im"),
            ("name", &config.site_name),
        ],
        vec![],
    )];
    for f in SERVER_FEATURES {
        children.push(el("feature", NS_DISCO_INFO, &[("var", f)], vec![]));
    }
    let addresses: Vec<(&str, &Option<String>)> = vec![
        ("abuse-addresses", &config.server.abuse_email),
        ("security-addresses", &config.server.security_email),
    ];
    if addresses.iter().any(|(_, a)| a.is_some()) {
        // XEP-0157 contact addresses in a XEP-0128 extended form.
        const NS_DATA: &str = "jabber:x:data";
        let mut fields = vec![el(
            "field",
            NS_DATA,
            &[("var", "FORM_TYPE"), ("type", "hidden")],
            vec![text_el(
                "value",
                NS_DATA,
                "http://jabber.org/network/serverinfo",
            )],
        )];
        for (var, addr) in addresses {
            if let Some(a) = addr {
                fields.push(el(
                    "field",
                    NS_DATA,
                    &[("var", var)],
                    vec![text_el("value", NS_DATA, &format!("mailto:{a}"))],
                ));
            }
        }
        children.push(el("x", NS_DATA, &[("type", "result")], fields));
    }
    match node {
        Some(n) => el("query", NS_DISCO_INFO, &[("node", n)], children),
        None => el("query", NS_DISCO_INFO, &[], children),
    }
}

fn time_el() -> Element {
    let now = time::OffsetDateTime::now_utc();
    let utc = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string());
    el(
        "time",
        NS_TIME,
        &[],
        vec![
            text_el("tzo", NS_TIME, "+00:00"),
            text_el("utc", NS_TIME, &utc),
        ],
    )
}

/// IQs a user sends to their own bare JID (or with no `to`).
pub async fn account_iq(state: &State, me: &Sender, iq: &Element) -> Element {
    let kind = iq.attr("type").unwrap_or("");
    if let Some(reply) = carbons(state, me, iq) {
        return reply;
    }
    if let Some(reply) = crate::pep::owner_iq(state, me, iq).await {
        return reply;
    }
    if let Some(reply) = crate::push::iq(state, me, iq).await {
        return reply;
    }
    if let Some(reply) = crate::clients::iq(state, me, iq).await {
        return reply;
    }
    match ns_of(iq).as_str() {
        NS_ROSTER if kind == "get" => roster_get(state, me, iq).await,
        NS_ROSTER if kind == "set" => roster_set(state, me, iq).await,
        NS_REGISTER if kind == "set" => register_set(state, me, iq).await,
        NS_PING if kind == "get" => xml::iq_result(iq, None),
        crate::vcard::NS_VCARD => crate::vcard::iq(state, me, &me.username, iq).await,
        crate::blocking::NS_BLOCKING => crate::blocking::iq(state, me, iq).await,
        crate::private::NS_PRIVATE => crate::private::iq(state, me, iq).await,
        NS_DISCO_INFO if kind == "get" => xml::iq_result(iq, Some(account_disco(true))),
        NS_DISCO_ITEMS if kind == "get" => account_items(state, &me.username, me, iq).await,
        _ => xml::error_reply(iq, "service-unavailable", None),
    }
}

/// disco#info of an account: what the server does on its behalf (archive and stanza ids for
/// its owner, personal eventing for everyone).
fn account_disco(owner: bool) -> Element {
    let mut children = vec![
        el(
            "identity",
            NS_DISCO_INFO,
            &[("category", "account"), ("type", "registered")],
            vec![],
        ),
        crate::pep::identity(),
    ];
    let mut features: Vec<&str> = crate::pep::FEATURES.to_vec();
    features.extend([crate::vcard::NS_VCARD, "urn:xmpp:pep-vcard-conversion:0"]);
    if owner {
        features.extend([
            crate::archive::NS_MAM,
            crate::archive::NS_SID,
            crate::blocking::NS_BLOCKING,
            crate::bookmarks::FEATURE_COMPAT,
            crate::push::NS_PUSH,
            crate::push::NS_PUSH_ENCRYPT,
            crate::push::NS_PUSH_ENCRYPT_AES_128_GCM,
            crate::push::NS_PUSH_JINGLE,
            crate::push::NS_PUSH_PRIORITY,
            crate::push::NS_FILTER_UNKNOWN,
            crate::push::NS_FILTER_MUTED,
            crate::push::NS_FILTER_GROUPCHAT,
            crate::clients::NS_CAM,
        ]);
    }
    for f in features {
        children.push(el("feature", NS_DISCO_INFO, &[("var", f)], vec![]));
    }
    el("query", NS_DISCO_INFO, &[], children)
}

/// disco#items of an account: its PEP nodes the requester may see.
async fn account_items(state: &State, owner: &str, me: &Sender, iq: &Element) -> Element {
    let items = crate::pep::disco_items(state, owner, me).await;
    xml::iq_result(iq, Some(el("query", NS_DISCO_ITEMS, &[], items)))
}

/// IQs to another local user's bare JID: answered by the server on their behalf.
pub async fn contact_iq(state: &State, me: &Sender, username: &str, iq: &Element) -> Element {
    if ns_of(iq) == crate::private::NS_PRIVATE {
        // XEP-0049: only the owner reaches private storage (whether or not the account exists).
        return xml::error_reply(iq, "forbidden", None);
    }
    match state.store.account(username).await {
        Ok(Some(_)) => {}
        _ => return xml::error_reply(iq, "service-unavailable", None),
    }
    if let Some(reply) = crate::pep::contact_iq(state, me, username, iq).await {
        return reply;
    }
    match (iq.attr("type"), ns_of(iq).as_str()) {
        (Some("get"), NS_PING) => xml::iq_result(iq, None),
        (_, crate::vcard::NS_VCARD) => crate::vcard::iq(state, me, username, iq).await,
        (Some("get"), NS_DISCO_INFO) => xml::iq_result(iq, Some(account_disco(false))),
        (Some("get"), NS_DISCO_ITEMS) => account_items(state, username, me, iq).await,
        _ => xml::error_reply(iq, "service-unavailable", None),
    }
}

/// One `<item/>` of a roster result or push.
pub fn roster_item_el(item: &RosterItem, removed: bool) -> Element {
    let sub = if removed {
        "remove"
    } else {
        item.subscription.as_str()
    };
    let mut e = el(
        "item",
        NS_ROSTER,
        &[("jid", &item.contact), ("subscription", sub)],
        vec![],
    );
    if let Some(n) = &item.name {
        xml::set_attr(&mut e, "name", n);
    }
    if item.ask_out && !removed {
        xml::set_attr(&mut e, "ask", "subscribe");
    }
    for g in &item.groups {
        e.append_child(text_el("group", NS_ROSTER, g));
    }
    e
}

async fn roster_get(state: &State, me: &Sender, iq: &Element) -> Element {
    match state.store.roster(&me.username).await {
        Ok((items, version)) => {
            let ver = version.to_string();
            let requested = xml::payload(iq)
                .and_then(|q| q.attr("ver"))
                .map(str::to_string);
            if requested.as_deref() == Some(ver.as_str()) {
                // RFC 6121 §2.6.3: unchanged, the client keeps its cached copy.
                return xml::iq_result(iq, None);
            }
            let children = items
                .iter()
                .filter(|i| {
                    i.subscription != Subscription::None
                        || i.ask_out
                        || i.name.is_some()
                        || !i.groups.is_empty()
                })
                .map(|i| roster_item_el(i, false))
                .collect();
            xml::iq_result(iq, Some(el("query", NS_ROSTER, &[("ver", &ver)], children)))
        }
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            xml::error_reply(iq, "internal-server-error", None)
        }
    }
}

async fn roster_set(state: &State, me: &Sender, iq: &Element) -> Element {
    let Some(query) = xml::payload(iq) else {
        return xml::error_reply(iq, "bad-request", None);
    };
    let items: Vec<&Element> = query.children().filter(|c| c.name() == "item").collect();
    if items.len() != 1 {
        return xml::error_reply(
            iq,
            "bad-request",
            Some("A roster set carries exactly one item"),
        );
    }
    let item_el = items[0];
    let Some(jid) = item_el.attr("jid").and_then(|j| jid::BareJid::new(j).ok()) else {
        return xml::error_reply(iq, "jid-malformed", None);
    };
    let contact = jid.to_string();
    if contact == me.bare {
        return xml::error_reply(iq, "not-allowed", Some("You cannot add yourself"));
    }
    if item_el.attr("subscription") == Some("remove") {
        return match state.store.remove_roster_item(&me.username, &contact).await {
            Ok(Some(v)) => {
                push_item(state, &me.username, &RosterItem::new(&contact), v, true);
                xml::iq_result(iq, None)
            }
            Ok(None) => xml::error_reply(iq, "item-not-found", None),
            Err(e) => {
                tracing::error!(error = %e, "roster remove failed");
                xml::error_reply(iq, "internal-server-error", None)
            }
        };
    }
    let mut item = match state.store.roster_item(&me.username, &contact).await {
        Ok(Some(i)) => i,
        Ok(None) => RosterItem::new(&contact),
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            return xml::error_reply(iq, "internal-server-error", None);
        }
    };
    item.name = item_el
        .attr("name")
        .map(str::to_string)
        .filter(|n| !n.is_empty());
    let mut groups: Vec<String> = item_el
        .children()
        .filter(|c| c.name() == "group")
        .map(|g| g.text())
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    if groups.iter().any(|g| g.len() > 1024) {
        return xml::error_reply(iq, "not-acceptable", Some("Group name too long"));
    }
    item.groups = groups;
    match state.store.put_roster_item(&me.username, &item).await {
        Ok(v) => {
            push_item(state, &me.username, &item, v, false);
            xml::iq_result(iq, None)
        }
        Err(e) => {
            tracing::error!(error = %e, "roster save failed");
            xml::error_reply(iq, "internal-server-error", None)
        }
    }
}

/// Password change (XEP-0077 §3.3) for the logged-in user.
async fn register_set(state: &State, me: &Sender, iq: &Element) -> Element {
    let Some(query) = xml::payload(iq) else {
        return xml::error_reply(iq, "bad-request", None);
    };
    if query.has_child("remove", NS_REGISTER) {
        return match state
            .store
            .set_account_state(&me.username, snikket_store::AccountState::PendingDeletion)
            .await
        {
            Ok(()) => {
                tracing::info!(user = %me.username, "account deletion requested");
                xml::iq_result(iq, None)
            }
            Err(e) => {
                tracing::error!(error = %e, "account deletion failed");
                xml::error_reply(iq, "internal-server-error", None)
            }
        };
    }
    let username = query
        .get_child("username", NS_REGISTER)
        .map(Element::text)
        .unwrap_or_default();
    let password = query
        .get_child("password", NS_REGISTER)
        .map(Element::text)
        .unwrap_or_default();
    if !username.is_empty()
        && snikket_xmpp::account::validate_localpart(&username)
            .ok()
            .as_deref()
            != Some(me.username.as_str())
    {
        return xml::error_reply(
            iq,
            "not-allowed",
            Some("You can only change your own password"),
        );
    }
    if let Err(e) = snikket_xmpp::account::check_password(&password, Some(&me.username)) {
        return xml::error_reply(iq, "not-acceptable", Some(e.text()));
    }
    let creds = match crate::c2s::register::credentials_for(&password) {
        Ok(c) => c,
        Err(_) => {
            return xml::error_reply(iq, "not-acceptable", Some("The password is not acceptable"))
        }
    };
    match state.store.set_credentials(&me.username, &creds).await {
        Ok(()) => xml::iq_result(iq, None),
        Err(e) => {
            tracing::error!(error = %e, "password change failed");
            xml::error_reply(iq, "internal-server-error", None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.1 computed here independently: identities, sorted features, then the
    /// extended form (FORM_TYPE first, fields sorted by var).
    #[test]
    fn caps_ver_follows_xep_0115() {
        use base64::Engine;
        use sha1::Digest;
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("SNIKKET_DOMAIN".to_string(), "chat.example.com".to_string());
        vars.insert(
            "SNIKKET_ADMIN_EMAIL".to_string(),
            "a@example.com".to_string(),
        );
        vars.insert("SNIKKET_SITE_NAME".to_string(), "Family".to_string());
        vars.insert(
            "SNIKKET_ABUSE_EMAIL".to_string(),
            "abuse@example.com".to_string(),
        );
        let config = snikket_config::Config::from_vars(&vars).unwrap();
        let (c, node) = server_caps(&config).unwrap();
        let mut features: Vec<&str> = SERVER_FEATURES.to_vec();
        features.sort_unstable();
        let mut s = String::from("server/im//Family<");
        for f in features {
            s.push_str(f);
            s.push('<');
        }
        s.push_str(
            "http://jabber.org/network/serverinfo<abuse-addresses<mailto:abuse@example.com<",
        );
        let want =
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
        assert_eq!(c.attr("ver"), Some(want.as_str()));
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert_eq!(node, format!("{CAPS_NODE}#{want}"));
    }
}
