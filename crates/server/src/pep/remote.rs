//! Personal eventing for contacts on other servers: their sessions' presence (arriving over
//! federation) carries entity capabilities, which tell which nodes they want (`+notify`), learnt by
//! a disco#info query over federation unless the caps hash is already known. Such a session then
//! gets the last items of the account it is a contact of, and notifications of new ones, like a
//! local session — as Prosody's PEP does for remote subscribers.

use super::{event_message, MAX_CACHED, NS_CAPS};
use crate::state::{lock, State};
use minidom::Element;
use snikket_store::PepNode;
use std::collections::HashSet;
use std::sync::Arc;

/// Available presence from `full` (on another server) reached `owner`, whose presence it is
/// subscribed to: learn what it wants to be notified of.
pub async fn presence(state: &State, owner: &str, full: &str, stanza: &Element) {
    let Some(c) = stanza.get_child("c", NS_CAPS) else {
        return;
    };
    let owner_bare = format!("{owner}@{}", state.config.domain.ascii);
    match super::learn_caps(state, c, full, &owner_bare, Some(owner)) {
        Some(Ok(nodes)) => interests_known(state, owner, full, nodes).await,
        Some(Err(iq)) => crate::s2s::send(state, iq).await,
        None => {}
    }
}

/// `full` (on another server) went offline.
pub fn gone(state: &State, full: &str) {
    state.pep.session_ended(full);
    let Ok(jid) = jid::Jid::new(full) else { return };
    let bare = jid.to_bare().to_string();
    let mut remote = lock(&state.pep.remote);
    if let Some(sessions) = remote.get_mut(&bare) {
        sessions.remove(full);
        if sessions.is_empty() {
            remote.remove(&bare);
        }
    }
}

/// The interests of `full` are known: remember them, and the first time it is seen as `owner`'s
/// contact send it the last item of every wanted node it may see.
pub(super) async fn interests_known(
    state: &State,
    owner: &str,
    full: &str,
    nodes: Arc<HashSet<String>>,
) {
    let Ok(jid) = jid::Jid::new(full) else { return };
    state.pep.set_interests(full, nodes.clone());
    let first = {
        let mut remote = lock(&state.pep.remote);
        if remote.len() >= MAX_CACHED {
            remote.clear();
        }
        remote
            .entry(jid.to_bare().to_string())
            .or_default()
            .entry(full.to_string())
            .or_default()
            .insert(owner.to_string())
    };
    if !first || crate::blocking::blocks(state, owner, &jid).await {
        return;
    }
    let last = match state.store.pep_last_items(owner).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "pep last items failed");
            return;
        }
    };
    let owner_bare = format!("{owner}@{}", state.config.domain.ascii);
    for (access, item) in last {
        if access == "whitelist" || !nodes.contains(&item.node) {
            continue;
        }
        let Some(msg) = super::last_item_message(state, &owner_bare, full, &item) else {
            continue;
        };
        crate::s2s::send(state, msg).await;
    }
}

/// Sends a notification of `owner`'s `node` to the interested sessions of `contacts` (bare JIDs
/// on other servers subscribed to the owner's presence).
pub(super) async fn notify(
    state: &State,
    owner: &str,
    owner_bare: &str,
    node: &PepNode,
    contacts: &[String],
    event: &(impl Fn(&str) -> Element + Sync),
) {
    for contact in contacts {
        let sessions: Vec<String> = lock(&state.pep.remote)
            .get(contact)
            .map(|s| {
                s.iter()
                    .filter(|(_, owners)| owners.contains(owner))
                    .map(|(full, _)| full.clone())
                    .collect()
            })
            .unwrap_or_default();
        if sessions.is_empty() {
            continue;
        }
        match jid::Jid::new(contact) {
            Ok(j) if !crate::blocking::blocks(state, owner, &j).await => {}
            _ => continue,
        }
        for full in sessions {
            if state.pep.interested(&full, &node.node) {
                let msg = event_message(state, owner_bare, &full, event(&full));
                crate::s2s::send(state, msg).await;
            }
        }
    }
}
