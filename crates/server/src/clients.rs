//! Client access management (XEP-0494, `urn:xmpp:cam:0`): an account's owner lists what has
//! access to the account — connected sessions and clients holding FAST tokens — and revokes a
//! token-holding client, which ends its sessions and its tokens at once. A client that logged in
//! with the password can only be locked out by changing the password, which the answer says.
//!
//! Ids are opaque (a hash of the client id or resource), so the list does not hand out the
//! client ids FAST logins present.

use crate::routing::Sender;
use crate::state::State;
use crate::xml::{self, el, text_el};
use minidom::Element;
use sha2::{Digest, Sha256};

/// `urn:xmpp:cam:0`.
pub const NS_CAM: &str = "urn:xmpp:cam:0";

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Client {
    id: String,
    connected: bool,
    /// Sessions of this client (resources).
    resources: Vec<String>,
    /// The FAST client id, when it holds tokens.
    fast: Option<String>,
    first_seen: i64,
    last_seen: i64,
    software: String,
}

fn opaque(kind: char, value: &str) -> String {
    let h = Sha256::digest(format!("cam\0{value}").as_bytes());
    let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{kind}{hex}")
}

/// The name a resource suggests for its software: the Bind 2 tag, or the resource itself.
fn software_of(resource: &str) -> String {
    match resource.rsplit_once('.') {
        Some((tag, id)) if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            tag.to_string()
        }
        _ => resource.to_string(),
    }
}

/// Whether `resource` is the Bind 2 resource of the FAST client with the resource id `rid`.
fn belongs(resource: &str, rid: &str) -> bool {
    resource == rid || resource.strip_suffix(rid).is_some_and(|t| t.ends_with('.'))
}

/// Everything with access to `username` now.
async fn clients(state: &State, username: &str) -> Result<Vec<Client>, snikket_store::StoreError> {
    let now = snikket_store::now();
    let mut sessions = state.router.sessions(username);
    let mut out = Vec::new();
    for (client_id, first, last) in state.store.fast_clients(username).await? {
        // The resource Bind 2 gives this client ends with an id derived from its client id.
        let bound = crate::c2s::fast::bind2_resource(None, username, Some(&client_id));
        let (mine, rest): (Vec<_>, Vec<_>) = sessions
            .into_iter()
            .partition(|s| belongs(&s.resource, &bound));
        sessions = rest;
        let connected = !mine.is_empty();
        out.push(Client {
            id: opaque('f', &client_id),
            connected,
            software: mine
                .first()
                .map(|s| software_of(&s.resource))
                .filter(|s| !s.is_empty() && s != &bound)
                .unwrap_or_else(|| "Unknown client".to_string()),
            resources: mine.into_iter().map(|s| s.resource).collect(),
            fast: Some(client_id),
            first_seen: first,
            last_seen: if connected { now } else { last },
        });
    }
    for s in sessions {
        out.push(Client {
            id: opaque('s', &s.resource),
            connected: true,
            software: software_of(&s.resource),
            resources: vec![s.resource],
            fast: None,
            first_seen: s.since,
            last_seen: now,
        });
    }
    Ok(out)
}

fn client_el(c: &Client) -> Element {
    let connected = if c.connected { "true" } else { "false" };
    let kind = if c.connected { "session" } else { "access" };
    let auth = el(
        "auth",
        NS_CAM,
        &[],
        vec![if c.fast.is_some() {
            el("fast", NS_CAM, &[], vec![])
        } else {
            el("password", NS_CAM, &[], vec![])
        }],
    );
    el(
        "client",
        NS_CAM,
        &[("connected", connected), ("id", &c.id), ("type", kind)],
        vec![
            text_el("first-seen", NS_CAM, &crate::archive::stamp(c.first_seen)),
            text_el("last-seen", NS_CAM, &crate::archive::stamp(c.last_seen)),
            auth,
            el("permission", NS_CAM, &[("status", "unrestricted")], vec![]),
            el(
                "user-agent",
                NS_CAM,
                &[],
                vec![text_el("software", NS_CAM, &c.software)],
            ),
        ],
    )
}

/// Handles `<list/>` and `<revoke/>` sent to one's own account; `None` for other IQs.
pub async fn iq(state: &State, me: &Sender, iq: &Element) -> Option<Element> {
    let p = xml::payload(iq)?;
    if p.ns() != NS_CAM {
        return None;
    }
    let kind = iq.attr("type").unwrap_or("");
    let list = match clients(state, &me.username).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listing clients failed");
            return Some(xml::error_reply(iq, "internal-server-error", None));
        }
    };
    match (kind, p.name()) {
        ("get", "list") => {
            let children = list.iter().map(client_el).collect();
            Some(xml::iq_result(
                iq,
                Some(el("clients", NS_CAM, &[], children)),
            ))
        }
        ("set", "revoke") => {
            let Some(id) = p.attr("id") else {
                return Some(xml::error_reply(iq, "bad-request", Some("Missing id")));
            };
            let Some(c) = list.into_iter().find(|c| c.id == id) else {
                return Some(xml::error_reply(iq, "item-not-found", None));
            };
            Some(revoke(state, me, iq, c).await)
        }
        _ => Some(xml::error_reply(iq, "bad-request", None)),
    }
}

async fn revoke(state: &State, me: &Sender, iq: &Element, c: Client) -> Element {
    let Some(client_id) = c.fast else {
        // A password login can only be undone by changing the password (XEP-0494 §3.2).
        let mut err = xml::error_reply(iq, "service-unavailable", None);
        if let Some(e) = err.get_child_mut("error", xml::NS_CLIENT) {
            e.append_child(el("password-reset-required", NS_CAM, &[], vec![]));
        }
        return err;
    };
    if let Err(e) = state
        .store
        .revoke_fast_client(&me.username, &client_id)
        .await
    {
        tracing::error!(error = %e, "revoking a client failed");
        return xml::error_reply(iq, "internal-server-error", None);
    }
    for r in &c.resources {
        state
            .router
            .close_session(&me.username, r, "not-authorized");
    }
    tracing::info!(user = %me.username, sessions = c.resources.len(), "client access revoked");
    xml::iq_result(iq, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_map_back_to_software_and_fast_clients() {
        assert_eq!(software_of("Conversations.1a2b3c4d"), "Conversations");
        assert_eq!(software_of("laptop"), "laptop");
        assert_eq!(software_of("gajim.XYZ"), "gajim.XYZ");
        assert!(belongs("Testapp.1a2b3c4d", "1a2b3c4d"));
        assert!(belongs("1a2b3c4d", "1a2b3c4d"));
        assert!(!belongs("x1a2b3c4d", "1a2b3c4d"));
        let a = opaque('f', "client-1");
        assert_eq!(a, opaque('f', "client-1"));
        assert_ne!(a, opaque('f', "client-2"));
        assert!(!a.contains("client"));
    }
}
