//! The session registry and delivery rules for local users (RFC 6121 §8).
//!
//! Each bound session has a bounded queue (`crate::inbox`); the router looks sessions up by
//! account and resource and hands them stanzas. It never blocks: a full queue means a stuck
//! client, and the caller falls back to offline storage for messages.

use crate::inbox::{inbox, Inbox, InboxSender};
use minidom::Element;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Capacity of one session's outbound channel.
pub const SESSION_QUEUE: usize = 512;

/// What the router sends a session task.
#[derive(Debug)]
pub enum Outbound {
    /// A stanza to write to the client (boxed: queued stanzas take one pointer each).
    Stanza(Box<Element>),
    /// Close the stream with this condition and text (e.g. `conflict` when the resource is taken
    /// over). Boxed for the same reason as stanzas.
    Close(Box<(&'static str, Option<&'static str>)>),
}

struct Entry {
    resource: String,
    session_id: u64,
    tx: InboxSender<Outbound>,
    /// Current presence, serialized (`None` until initial presence; unavailable sessions do not
    /// get broadcasts). Kept as text: a parsed element costs about a kilobyte even for a bare
    /// `<presence/>` (its attribute maps), and every online session keeps one.
    presence: Option<Box<str>>,
    priority: i8,
    /// Message Carbons (XEP-0280) enabled.
    carbons: bool,
    /// Fetched the blocklist, so it gets blocklist pushes (XEP-0191 §3.3).
    blocklist: bool,
    /// Bound at (Unix seconds).
    since: i64,
    /// A connection is attached (false while hibernating, XEP-0198).
    connected: bool,
    /// Told to close: no longer listed as one of the account's clients.
    closing: bool,
}

/// What the router knows of one live session (for diagnostics and client management).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The bound resource.
    pub resource: String,
    /// Bound at (Unix seconds).
    pub since: i64,
    /// A connection is attached (false while hibernating).
    pub connected: bool,
    /// Sent available presence.
    pub available: bool,
    /// Message Carbons on.
    pub carbons: bool,
}

/// A presence as text, for [`Entry::presence`]; an element that cannot be written (it came from
/// the parser, so this does not happen) is stored as plain available presence.
fn serialize_presence(p: &Element) -> Box<str> {
    let mut out = Vec::new();
    match p.write_to(&mut out).map(|_| String::from_utf8(out)) {
        Ok(Ok(s)) => s.into_boxed_str(),
        _ => {
            tracing::warn!("presence could not be serialized; storing plain presence");
            Box::from("<presence xmlns='jabber:client'/>")
        }
    }
}

/// Why a session could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The account has `max` sessions already.
    TooMany,
}

/// Live sessions by account.
#[derive(Default)]
pub struct Router {
    sessions: Mutex<HashMap<String, Vec<Entry>>>,
    next_id: AtomicU64,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a bound session. An existing session with the same resource is told to close
    /// (`conflict`) and replaced; returns whether that happened.
    pub fn register(
        &self,
        username: &str,
        resource: &str,
        max: usize,
    ) -> Result<(Inbox<Outbound>, u64, bool), RegisterError> {
        let (tx, rx) = inbox(SESSION_QUEUE);
        let session_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        // Most accounts have one or two clients: room for one to start with, not four.
        let list = map
            .entry(username.to_string())
            .or_insert_with(|| Vec::with_capacity(1));
        let mut kicked = false;
        if let Some(pos) = list.iter().position(|e| e.resource == resource) {
            let old = list.remove(pos);
            let _ = old.tx.try_send(Outbound::Close(Box::new((
                "conflict",
                Some("Replaced by a new connection"),
            ))));
            kicked = true;
        }
        if list.len() >= max {
            return Err(RegisterError::TooMany);
        }
        list.push(Entry {
            resource: resource.to_string(),
            session_id,
            tx,
            presence: None,
            priority: 0,
            carbons: false,
            blocklist: false,
            since: snikket_store::now(),
            connected: true,
            closing: false,
        });
        Ok((rx, session_id, kicked))
    }

    /// Removes a session (only if it is still the one registered under that resource).
    pub fn unregister(&self, username: &str, resource: &str, session_id: u64) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(username) {
            list.retain(|e| !(e.resource == resource && e.session_id == session_id));
            if list.is_empty() {
                map.remove(username);
            }
        }
    }

    /// Records a session's presence (available with priority, or `None` when unavailable).
    pub fn set_presence(&self, username: &str, resource: &str, presence: Option<Element>) {
        let priority = presence
            .as_ref()
            .and_then(|p| p.children().find(|c| c.name() == "priority"))
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let presence = presence.as_ref().map(serialize_presence);
        self.update(username, resource, |e| {
            e.presence = presence;
            e.priority = priority;
        });
    }

    /// Sends to one full JID; returns false if that session does not exist or is stuck.
    pub fn to_resource(&self, username: &str, resource: &str, stanza: Element) -> bool {
        let map = self.lock();
        map.get(username)
            .and_then(|l| l.iter().find(|e| e.resource == resource))
            .is_some_and(|e| e.tx.try_send(Outbound::Stanza(Box::new(stanza))).is_ok())
    }

    /// Sends to every available session with non-negative priority (message to a bare JID).
    /// Returns how many sessions accepted it.
    pub fn to_available(&self, username: &str, stanza: &Element) -> usize {
        let map = self.lock();
        let Some(list) = map.get(username) else {
            return 0;
        };
        list.iter()
            .filter(|e| e.presence.is_some() && e.priority >= 0)
            .filter(|e| {
                e.tx.try_send(Outbound::Stanza(Box::new(stanza.clone())))
                    .is_ok()
            })
            .count()
    }

    /// Sends to every session that has sent initial presence (presence broadcast, roster push
    /// targets use [`Router::to_all`]).
    pub fn to_present(&self, username: &str, stanza: &Element, except: Option<&str>) -> usize {
        let map = self.lock();
        let Some(list) = map.get(username) else {
            return 0;
        };
        list.iter()
            .filter(|e| e.presence.is_some() && Some(e.resource.as_str()) != except)
            .filter(|e| {
                e.tx.try_send(Outbound::Stanza(Box::new(stanza.clone())))
                    .is_ok()
            })
            .count()
    }

    /// Sends to every bound session of the account (roster pushes).
    pub fn to_all(&self, username: &str, stanza: &Element) {
        let map = self.lock();
        if let Some(list) = map.get(username) {
            for e in list {
                let _ = e.tx.try_send(Outbound::Stanza(Box::new(stanza.clone())));
            }
        }
    }

    /// Whether this session has sent available presence (without parsing the stored presence).
    pub fn is_available(&self, username: &str, resource: &str) -> bool {
        let map = self.lock();
        map.get(username)
            .and_then(|l| l.iter().find(|e| e.resource == resource))
            .is_some_and(|e| e.presence.is_some())
    }

    /// Resources of every session that sent available presence, whatever its priority (without
    /// parsing their presences).
    pub fn present_resources(&self, username: &str) -> Vec<String> {
        let map = self.lock();
        map.get(username)
            .map(|l| {
                l.iter()
                    .filter(|e| e.presence.is_some())
                    .map(|e| e.resource.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Current presences of the account's available sessions, with their resources.
    pub fn presences(&self, username: &str) -> Vec<(String, Element)> {
        let map = self.lock();
        map.get(username)
            .map(|l| {
                l.iter()
                    .filter_map(|e| {
                        let p = e.presence.as_deref()?;
                        match p.parse::<Element>() {
                            Ok(p) => Some((e.resource.clone(), p)),
                            Err(err) => {
                                tracing::warn!(error = %err, "stored presence does not parse");
                                None
                            }
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records whether a session has a connection (false while it hibernates).
    pub fn set_connected(&self, username: &str, resource: &str, connected: bool) {
        self.update(username, resource, |e| e.connected = connected);
    }

    /// The live sessions of an account.
    pub fn sessions(&self, username: &str) -> Vec<SessionInfo> {
        let map = self.lock();
        map.get(username)
            .map(|l| {
                l.iter()
                    .filter(|e| !e.closing)
                    .map(|e| SessionInfo {
                        resource: e.resource.clone(),
                        since: e.since,
                        connected: e.connected,
                        available: e.presence.is_some(),
                        carbons: e.carbons,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tells one session to close its stream with `condition`; false if there is no such session.
    /// From then on [`Router::sessions`] leaves it out, though it ends a moment later.
    pub fn close_session(&self, username: &str, resource: &str, condition: &'static str) -> bool {
        let mut map = self.lock();
        map.get_mut(username)
            .and_then(|l| l.iter_mut().find(|e| e.resource == resource))
            .is_some_and(|e| {
                let sent =
                    e.tx.try_send(Outbound::Close(Box::new((condition, None))))
                        .is_ok();
                e.closing |= sent;
                sent
            })
    }

    /// Changes one session's entry, if it exists.
    fn update(&self, username: &str, resource: &str, f: impl FnOnce(&mut Entry)) {
        let mut map = self.lock();
        if let Some(e) = map
            .get_mut(username)
            .and_then(|l| l.iter_mut().find(|e| e.resource == resource))
        {
            f(e);
        }
    }

    /// Sends `make(resource)` to every session of the account that `keep` selects.
    fn to_selected(
        &self,
        username: &str,
        keep: impl Fn(&Entry) -> bool,
        make: impl Fn(&str) -> Element,
    ) {
        let map = self.lock();
        if let Some(list) = map.get(username) {
            for e in list.iter().filter(|e| keep(e)) {
                let _ = e.tx.try_send(Outbound::Stanza(Box::new(make(&e.resource))));
            }
        }
    }

    /// Turns Message Carbons on or off for a session.
    pub fn set_carbons(&self, username: &str, resource: &str, on: bool) {
        self.update(username, resource, |e| e.carbons = on);
    }

    /// Sends `make(resource)` to every carbons-enabled session except the listed resources.
    pub fn to_carbons(&self, username: &str, except: &[&str], make: impl Fn(&str) -> Element) {
        self.to_selected(
            username,
            |e| e.carbons && !except.contains(&e.resource.as_str()),
            make,
        );
    }

    /// Records that a session fetched the blocklist and so wants its changes pushed.
    pub fn set_blocklist_interest(&self, username: &str, resource: &str) {
        self.update(username, resource, |e| e.blocklist = true);
    }

    /// Sends `make(resource)` to every session that fetched the blocklist.
    pub fn to_blocklist_interested(&self, username: &str, make: impl Fn(&str) -> Element) {
        self.to_selected(username, |e| e.blocklist, make);
    }

    /// Resources of available sessions that a message to the bare JID reaches.
    pub fn available_resources(&self, username: &str) -> Vec<String> {
        let map = self.lock();
        map.get(username)
            .map(|l| {
                l.iter()
                    .filter(|e| e.presence.is_some() && e.priority >= 0)
                    .map(|e| e.resource.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Accounts with at least one session, and the number of sessions in all.
    pub fn online(&self) -> (Vec<String>, usize) {
        let map = self.lock();
        let users = map
            .iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(u, _)| u.clone())
            .collect();
        (users, map.values().map(Vec::len).sum())
    }

    /// Number of sessions of an account.
    pub fn session_count(&self, username: &str) -> usize {
        self.lock().get(username).map(Vec::len).unwrap_or(0)
    }

    /// Asks every session to close (server shutdown).
    pub fn close_all(&self) {
        let map = self.lock();
        for e in map.values().flatten() {
            let _ =
                e.tx.try_send(Outbound::Close(Box::new(("system-shutdown", None))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Element {
        Element::builder("message", "jabber:client").build()
    }

    #[test]
    fn limits_conflicts_and_delivery() {
        let r = Router::default();
        let (mut rx1, id1, kicked) = r.register("alice", "phone", 2).unwrap();
        assert!(!kicked);
        let (_rx2, _id2, _) = r.register("alice", "laptop", 2).unwrap();
        assert_eq!(
            r.register("alice", "tablet", 2).err(),
            Some(RegisterError::TooMany)
        );
        // Same resource: the old session is told to close and replaced.
        let (_rx3, id3, kicked) = r.register("alice", "phone", 2).unwrap();
        assert!(kicked);
        assert!(matches!(rx1.try_recv(), Some(Outbound::Close(c)) if c.0 == "conflict"));
        // Unregistering the old id does not remove the new session.
        r.unregister("alice", "phone", id1);
        assert_eq!(r.session_count("alice"), 2);
        // Bare delivery only reaches available sessions.
        assert_eq!(r.to_available("alice", &msg()), 0);
        r.set_presence(
            "alice",
            "phone",
            Some(Element::builder("presence", "jabber:client").build()),
        );
        assert_eq!(r.to_available("alice", &msg()), 1);
        assert!(r.to_resource("alice", "laptop", msg()));
        assert!(!r.to_resource("alice", "nope", msg()));
        r.unregister("alice", "phone", id3);
        assert_eq!(r.session_count("alice"), 1);
    }

    #[test]
    fn stored_presence_comes_back_as_it_was_sent() {
        let r = Router::default();
        let (_rx, _, _) = r.register("alice", "phone", 2).unwrap();
        let sent: Element = "<presence xmlns='jabber:client' from='alice@example.com/phone'>\
            <show>away</show><status>a &amp; b &lt;3</status><priority>-1</priority>\
            <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/></presence>"
            .parse()
            .unwrap();
        assert!(!r.is_available("alice", "phone"));
        r.set_presence("alice", "phone", Some(sent.clone()));
        assert_eq!(r.presences("alice"), vec![("phone".to_string(), sent)]);
        assert!(r.is_available("alice", "phone"));
        assert_eq!(r.present_resources("alice"), vec!["phone".to_string()]);
        assert!(r.available_resources("alice").is_empty());
        // Negative priority: available, but not a target for bare-JID messages.
        assert_eq!(r.to_available("alice", &msg()), 0);
        r.set_presence("alice", "phone", None);
        assert!(r.presences("alice").is_empty());
        assert!(!r.is_available("alice", "phone"));
    }

    #[test]
    fn blocklist_pushes_reach_only_sessions_that_fetched_the_list() {
        let r = Router::default();
        let (mut phone, _, _) = r.register("alice", "phone", 3).unwrap();
        let (mut laptop, _, _) = r.register("alice", "laptop", 3).unwrap();
        r.set_blocklist_interest("alice", "laptop");
        r.to_blocklist_interested("alice", |res| {
            let mut m = msg();
            crate::xml::set_attr(&mut m, "to", res);
            m
        });
        assert!(phone.try_recv().is_none());
        match laptop.try_recv() {
            Some(Outbound::Stanza(m)) => assert_eq!(m.attr("to"), Some("laptop")),
            other => panic!("no push: {other:?}"),
        }
        // A new session on the same resource starts without the interest.
        let (mut again, _, _) = r.register("alice", "laptop", 3).unwrap();
        r.to_blocklist_interested("alice", |_| msg());
        assert!(again.try_recv().is_none());
    }
}
