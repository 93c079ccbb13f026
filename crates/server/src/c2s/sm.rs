//! Stream Management (XEP-0198): acks, and resumption of a session whose connection dropped.
//!
//! A session that enabled resumption is not ended when its TCP connection breaks: it hibernates,
//! keeping its unacknowledged stanzas and queueing new ones, until the client resumes it on a new
//! connection (which `negotiate` hands over through this registry) or the hibernation ends. At
//! the end, unacknowledged messages go to offline storage, so nothing sent to a client is lost.

use crate::c2s::conn::Conn;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// `urn:xmpp:sm:3`.
pub const NS_SM: &str = "urn:xmpp:sm:3";
/// How long a dropped session waits to be resumed (Prosody's default: 10 minutes).
pub const HIBERNATION: Duration = Duration::from_secs(600);

use crate::c2s::negotiate::Tls;

/// A new connection taking over a session.
pub struct Resumption {
    /// The new, authenticated connection.
    pub conn: Conn<Tls>,
    /// Stanzas the client says it handled (`h` of `<resume/>`).
    pub h: u32,
    /// With SASL2 (inline resumption), the `<success/>` that carries `<resumed/>`.
    pub success: Option<minidom::Element>,
}

/// Stream management enabled inline at Bind 2 (XEP-0198 §inline): the session starts with it.
#[derive(Debug, Clone)]
pub struct InlineEnable {
    /// The stream-management id.
    pub id: String,
    /// Whether the session can be resumed.
    pub resume: bool,
}

/// The `<enabled/>` answer for a session `id`.
pub fn enabled_element(id: &str, resume: bool) -> minidom::Element {
    let mut enabled = crate::xml::el("enabled", NS_SM, &[("id", id)], vec![]);
    if resume {
        crate::xml::set_attr(&mut enabled, "resume", "true");
        crate::xml::set_attr(&mut enabled, "max", &HIBERNATION.as_secs().to_string());
    }
    enabled
}

/// Whether an `<enable/>` asks for resumption.
pub fn wants_resume(enable: &minidom::Element) -> bool {
    matches!(enable.attr("resume"), Some("true") | Some("1"))
}

/// Resumable sessions by stream-management id.
#[derive(Default)]
pub struct Registry {
    waiting: Mutex<HashMap<String, (String, oneshot::Sender<Resumption>)>>,
}

impl Registry {
    /// Registers a resumable session; returns the receiver the session task watches.
    pub fn register(&self, id: &str, username: &str) -> oneshot::Receiver<Resumption> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (username.to_string(), tx));
        rx
    }

    /// Removes a session (it ended).
    pub fn remove(&self, id: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Hands `conn` to the session `id` of `username`; gives the connection back when there is
    /// no such session.
    pub fn resume(&self, id: &str, username: &str, r: Resumption) -> Result<(), Box<Resumption>> {
        let entry = {
            let mut m = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            match m.get(id) {
                Some((owner, _)) if owner == username => m.remove(id),
                _ => None,
            }
        };
        match entry {
            Some((_, tx)) => tx.send(r).map_err(Box::new),
            None => Err(Box::new(r)),
        }
    }
}

/// Per-session stream management counters and the unacknowledged queue.
#[derive(Debug, Default)]
pub struct Counters {
    /// Stanzas received from the client.
    pub h_in: u32,
    /// Stanzas sent to the client.
    pub h_out: u32,
    /// Sent but not yet acknowledged, oldest first.
    pub unacked: std::collections::VecDeque<minidom::Element>,
}

impl Counters {
    /// Records a stanza sent to the client.
    pub fn sent(&mut self, el: minidom::Element) {
        self.h_out = self.h_out.wrapping_add(1);
        self.unacked.push_back(el);
    }

    /// Applies the client's `h`: drops what it has handled. A value beyond what was sent is a
    /// protocol violation (returns false).
    pub fn ack(&mut self, h: u32) -> bool {
        let base = self.h_out.wrapping_sub(self.unacked.len() as u32);
        let handled = h.wrapping_sub(base);
        if handled as usize > self.unacked.len() {
            return false;
        }
        for _ in 0..handled {
            self.unacked.pop_front();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(n: u32) -> minidom::Element {
        minidom::Element::builder(format!("m{n}"), "jabber:client").build()
    }

    #[test]
    fn acks_drop_handled_stanzas_with_wrapping_counters() {
        let mut c = Counters {
            h_out: u32::MAX - 1,
            ..Default::default()
        };
        for i in 0..4 {
            c.sent(el(i));
        }
        assert!(c.ack(u32::MAX));
        assert_eq!(c.unacked.len(), 3);
        assert!(c.ack(1));
        assert_eq!(c.unacked.len(), 1);
        assert_eq!(c.unacked[0].name(), "m3");
        assert!(!c.ack(10), "acking more than was sent is an error");
        assert!(c.ack(1), "repeating an ack is harmless");
    }
}
