//! What other servers send us, under the same rules as local traffic: messages are archived,
//! stored offline and pushed like any other; presence and subscriptions update the rosters;
//! IQs to an account are answered for it (PEP items such as OMEMO keys, vCards, disco) or
//! passed to the addressed resource. Limited users hear nothing from other domains but errors
//! and IQ results (spec 4.1); blocklists apply.

use crate::routing::{self, Sender, Target};
use crate::state::State;
use crate::xml;
use minidom::Element;

/// Server IQs a remote entity may ask: the public, read-only ones.
const PUBLIC_SERVER_IQS: &[&str] = &[
    "urn:xmpp:ping",
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "jabber:iq:version",
    "urn:xmpp:time",
    "vcard-temp",
];

/// A stanza from an authenticated peer (its `from` and `to` domains already checked).
pub async fn from_remote(state: &State, stanza: Element) {
    let from_domain = stanza.attr("from").and_then(super::domain_of);
    if let Some(d) = from_domain {
        if state.s2s.domain_blocked(state, &d).await {
            // An admin blocked the domain after its link was opened; new links are refused.
            tracing::debug!(domain = %d, "stanza from an admin-blocked domain dropped");
            return;
        }
    }
    let groups = stanza
        .attr("to")
        .and_then(|to| routing::groups_address(state, to));
    if let Some(addr) = groups {
        // A group chat here, joined from another server: the same rules as for local people
        // (members-only rooms need a membership; circle chats are the circle's).
        let Some(remote) = stanza.attr("from").and_then(remote_sender) else {
            return;
        };
        for answer in crate::muc::from_client(state, &remote, addr, stanza).await {
            reply(state, answer).await;
        }
        return;
    }
    deliver(state, stanza).await;
}

/// Answers a stanza from another domain with an error, over federation.
async fn refuse(state: &State, stanza: &Element, condition: &str) {
    if stanza.attr("type") == Some("error")
        || (stanza.name() == "iq" && stanza.attr("type") == Some("result"))
        || stanza.name() == "presence"
    {
        return;
    }
    reply(state, xml::error_reply(stanza, condition, None)).await;
}

async fn reply(state: &State, stanza: Element) {
    super::send(state, stanza).await;
}

/// Delivers an error about a stanza a local sender sent to another domain (made here when the
/// link failed). Never answers, so it cannot loop.
pub async fn deliver_error(state: &State, error: Element) {
    let Some(to) = error.attr("to").map(str::to_string) else {
        return;
    };
    let Target::Local { username, resource } = routing::target(state, &to) else {
        return;
    };
    match resource {
        Some(r) => {
            state.router.to_resource(&username, &r, error);
        }
        None if error.name() == "iq" => {
            if let Some(from) = error.attr("from") {
                let remote = Sender {
                    username: String::new(),
                    resource: String::new(),
                    bare: from.to_string(),
                    full: from.to_string(),
                };
                crate::push::iq_response(state, &remote, &error).await;
            }
        }
        None => {
            state.router.to_present(&username, &error, None);
        }
    }
}

/// Delivers a stanza from another domain (or an error standing for one) to its local addressee.
pub async fn deliver(state: &State, stanza: Element) {
    let (Some(from), Some(to)) = (
        stanza.attr("from").map(str::to_string),
        stanza.attr("to").map(str::to_string),
    ) else {
        return;
    };
    let Ok(from_jid) = jid::Jid::new(&from) else {
        return;
    };
    let Some(remote) = remote_sender(&from) else {
        return;
    };
    let kind = stanza.attr("type").unwrap_or("").to_string();
    match routing::target(state, &to) {
        Target::Server => {
            if stanza.name() == "iq" && matches!(kind.as_str(), "get" | "set") {
                let ns = xml::payload(&stanza).map(Element::ns).unwrap_or_default();
                let answer = if kind == "get" && PUBLIC_SERVER_IQS.contains(&ns.as_str()) {
                    crate::modules::server_iq(state, &remote, &stanza).await
                } else {
                    xml::error_reply(&stanza, "service-unavailable", None)
                };
                reply(state, answer).await;
            }
        }
        Target::Local { username, resource } => {
            let answer_only = kind == "error" || (stanza.name() == "iq" && kind == "result");
            if !answer_only {
                match state.store.account(&username).await {
                    Ok(Some(a)) if a.role == snikket_store::Role::Limited => {
                        refuse(state, &stanza, "service-unavailable").await;
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        refuse(state, &stanza, "service-unavailable").await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "account lookup failed");
                        refuse(state, &stanza, "internal-server-error").await;
                        return;
                    }
                }
                if crate::blocking::blocks(state, &username, &from_jid).await {
                    refuse(state, &stanza, "service-unavailable").await;
                    return;
                }
            }
            match stanza.name() {
                "message" => {
                    let kind = if kind.is_empty() {
                        "normal".into()
                    } else {
                        kind
                    };
                    let errors = routing::deliver_message(
                        state,
                        &username,
                        resource.as_deref(),
                        &kind,
                        stanza,
                    )
                    .await;
                    for e in errors {
                        reply(state, e).await;
                    }
                }
                "iq" => iq(state, &remote, &username, resource.as_deref(), stanza).await,
                "presence" => {
                    presence(
                        state,
                        &remote,
                        &from_jid,
                        &username,
                        resource.as_deref(),
                        stanza,
                    )
                    .await
                }
                _ => {}
            }
        }
        Target::Share | Target::Remote(_) | Target::Invalid => {
            refuse(state, &stanza, "service-unavailable").await;
        }
    }
}

/// Someone on another server as the sender of a stanza (no local account: empty username).
fn remote_sender(from: &str) -> Option<Sender> {
    let j = jid::Jid::new(from).ok()?;
    Some(Sender {
        username: String::new(),
        resource: j
            .resource()
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        bare: j.to_bare().to_string(),
        full: from.to_string(),
    })
}

async fn iq(
    state: &State,
    remote: &Sender,
    username: &str,
    resource: Option<&str>,
    stanza: Element,
) {
    let kind = stanza.attr("type").unwrap_or("");
    if !matches!(kind, "get" | "set" | "result" | "error") || stanza.attr("id").is_none() {
        return;
    }
    match resource {
        Some(r) => {
            if !state.router.to_resource(username, r, stanza.clone())
                && matches!(kind, "get" | "set")
            {
                refuse(state, &stanza, "service-unavailable").await;
            }
        }
        None if matches!(kind, "result" | "error") => {
            // Answers to what the server sent for the account (push notifications, caps
            // queries for personal eventing).
            if !crate::push::iq_response(state, remote, &stanza).await {
                crate::pep::iq_response(state, remote, &stanza).await;
            }
        }
        None => {
            let answer = crate::modules::contact_iq(state, remote, username, &stanza).await;
            reply(state, answer).await;
        }
    }
}

async fn presence(
    state: &State,
    remote: &Sender,
    from_jid: &jid::Jid,
    username: &str,
    resource: Option<&str>,
    stanza: Element,
) {
    let kind = stanza.attr("type").map(str::to_string);
    let me = format!("{username}@{}", state.config.domain.ascii);
    let item = match state.store.roster_item(username, &remote.bare).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            return;
        }
    };
    let has_from = item.as_ref().is_some_and(|i| i.subscription.has_from());
    let has_to = item.as_ref().is_some_and(|i| i.subscription.has_to());
    // Subscription stanzas carry bare addresses (RFC 6121 §3.1.2).
    let forward = routing::presence_el(kind.as_deref(), &remote.bare, &me);
    match kind.as_deref() {
        Some("subscribe") => {
            if has_from {
                reply(
                    state,
                    routing::presence_el(Some("subscribed"), &me, &remote.bare),
                )
                .await;
                return;
            }
            routing::update_item(state, username, &remote.bare, |i| i.ask_in = true).await;
            state.router.to_present(username, &forward, None);
        }
        Some("subscribed") => {
            let asked = item.as_ref().is_some_and(|i| i.ask_out);
            if !asked && has_to {
                return;
            }
            routing::update_item(state, username, &remote.bare, |i| {
                i.subscription = i.subscription.with_to(true);
                i.ask_out = false;
            })
            .await;
            state.router.to_present(username, &forward, None);
        }
        Some("unsubscribe") => {
            if item.is_none() {
                return;
            }
            routing::update_item(state, username, &remote.bare, |i| {
                i.subscription = i.subscription.with_from(false);
                i.ask_in = false;
            })
            .await;
            state.router.to_present(username, &forward, None);
        }
        Some("unsubscribed") => {
            if item.is_none() {
                return;
            }
            routing::update_item(state, username, &remote.bare, |i| {
                i.subscription = i.subscription.with_to(false);
                i.ask_out = false;
            })
            .await;
            state.router.to_present(username, &forward, None);
        }
        Some("probe") => {
            if !has_from || crate::blocking::blocks(state, username, from_jid).await {
                return;
            }
            let presences = state.router.presences(username);
            if presences.is_empty() {
                let gone = routing::presence_el(Some("unavailable"), &me, &remote.bare);
                reply(state, gone).await;
            }
            for (_, p) in presences {
                reply(state, routing::readdress(&p, &remote.bare)).await;
            }
        }
        None | Some("unavailable") | Some("error") => {
            match kind.as_deref() {
                // A contact allowed to see the user's personal eventing: its session's interests.
                None if has_from => {
                    crate::pep::remote::presence(state, username, &remote.full, &stanza).await
                }
                Some("unavailable") => crate::pep::remote::gone(state, &remote.full),
                _ => {}
            }
            match resource {
                Some(r) => {
                    state.router.to_resource(username, r, stanza);
                }
                // To the bare address: every available resource gets it, subscribed or not
                // (RFC 6121 §4.3.2, §8.5.2.1.1) — e.g. the unavailable presence that follows a
                // cancelled subscription.
                None => {
                    state.router.to_present(username, &stanza, None);
                }
            }
        }
        Some(_) => {}
    }
}
