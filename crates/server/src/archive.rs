//! Message archive (XEP-0313) writing in batches, stanza ids (XEP-0359) and archive queries.
//!
//! Every archived message goes through one writer task that commits whatever has queued up in a
//! single transaction, so throughput grows with load while each caller still waits for its own
//! commit before the message is delivered ("write before ack").

use crate::routing::Sender;
use crate::state::State;
use crate::xml::{self, el, text_el, NS_CLIENT};
use minidom::Element;
use snikket_runtime::{CancellationToken, TaskTracker};
use snikket_store::{ArchiveEntry, ArchiveQuery, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// `urn:xmpp:mam:2`.
pub const NS_MAM: &str = "urn:xmpp:mam:2";
/// `urn:xmpp:sid:0`.
pub const NS_SID: &str = "urn:xmpp:sid:0";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_DATA: &str = "jabber:x:data";
/// Rows per archive commit at most; a batch is one INSERT statement. The more rows a commit
/// holds, the more of them share the index pages it changes (an owner's newest page), so under
/// load, when batches grow, a row costs less.
const MAX_BATCH: usize = 4000;
const _: () = assert!(MAX_BATCH <= snikket_store::ARCHIVE_ROWS_PER_INSERT);

type Job = (ArchiveEntry, oneshot::Sender<bool>);

/// Handle to the archive writer task.
#[derive(Clone)]
pub struct Archiver {
    tx: mpsc::Sender<Job>,
}

impl Archiver {
    /// Starts the writer; it stops when `shutdown` fires and the queue is drained.
    pub fn spawn(store: Store, tracker: &TaskTracker, shutdown: CancellationToken) -> Archiver {
        let (tx, mut rx) = mpsc::channel::<Job>(8192);
        tracker.spawn(async move {
            loop {
                let first = tokio::select! {
                    j = rx.recv() => j,
                    _ = shutdown.cancelled() => { rx.close(); rx.recv().await }
                };
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                let (entries, acks): (Vec<ArchiveEntry>, Vec<oneshot::Sender<bool>>) =
                    batch.into_iter().unzip();
                let ok = match store.archive_messages(&entries).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, count = entries.len(), "archive write failed");
                        false
                    }
                };
                for a in acks {
                    let _ = a.send(ok);
                }
            }
        });
        Archiver { tx }
    }

    /// Archives one entry and waits for its commit. Returns false if it could not be stored.
    pub async fn write(&self, entry: ArchiveEntry) -> bool {
        let (ack, done) = oneshot::channel();
        if self.tx.send((entry, ack)).await.is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }
}

/// A fresh, unguessable stanza id.
pub fn new_stanza_id() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 12];
    // The thread's CSPRNG (seeded from the OS): no system call per message.
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A fresh archive id (XEP-0359 stanza id): the time in microseconds as 12 hex digits, then 72
/// random bits. Still unguessable, but in time order, so each new row goes at the end of its
/// owner's part of the stanza-id index instead of a random page of it (the index's working set
/// stays one page per user however big the archive grows).
pub fn new_archive_id() -> String {
    use base64::Engine;
    use rand::RngCore;
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
        & 0xffff_ffff_ffff;
    let mut b = [0u8; 9];
    rand::thread_rng().fill_bytes(&mut b);
    format!(
        "{micros:012x}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// Whether a message belongs in the archive: chat or normal messages with content.
pub fn archivable(stanza: &Element) -> bool {
    matches!(stanza.attr("type").unwrap_or("normal"), "chat" | "normal")
        && stanza
            .children()
            .any(|c| c.name() == "body" || c.name() == "encrypted")
}

/// Removes `<stanza-id/>` elements a client put in (they could fake archive ids, XEP-0359 §5).
pub fn strip_stanza_ids(stanza: &mut Element) {
    while stanza.remove_child("stanza-id", NS_SID).is_some() {}
}

/// Archives `stanza` for `owner` (talking with `with_jid`) under a new stanza id, which is also
/// added to the stanza. Returns false when it could not be stored.
pub async fn archive_for(state: &State, owner: &str, with_jid: &str, stanza: &mut Element) -> bool {
    let id = new_archive_id();
    let by = format!("{owner}@{}", state.config.domain.ascii);
    let text = match snikket_xmpp::framing::writer::element_to_bytes(stanza) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => return false,
    };
    let entry = ArchiveEntry {
        username: owner.to_string(),
        stanza_id: id.clone(),
        with_jid: with_jid.to_string(),
        stanza: text,
        stored_at: snikket_store::now(),
    };
    let ok = state.archiver.write(entry).await;
    if ok {
        stanza.append_child(el("stanza-id", NS_SID, &[("id", &id), ("by", &by)], vec![]));
    }
    ok
}

fn form_value(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.name() == "field" && f.attr("var") == Some(var))
        .and_then(|f| f.children().find(|c| c.name() == "value"))
        .map(Element::text)
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

pub(crate) fn stamp(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Answers a MAM query: the result messages, then the IQ result with `<fin/>` (XEP-0313 §4).
pub async fn query(state: &State, me: &Sender, iq: &Element) -> Vec<Element> {
    let Some(q) = xml::payload(iq) else {
        return vec![xml::error_reply(iq, "bad-request", None)];
    };
    let queryid = q.attr("queryid").map(str::to_string);
    let mut filter = ArchiveQuery {
        limit: 50,
        ..Default::default()
    };
    if let Some(form) = q.get_child("x", NS_DATA) {
        filter.with_jid = form_value(form, "with")
            .and_then(|w| jid::BareJid::new(w.trim()).ok())
            .map(|j| j.to_string());
        filter.start = form_value(form, "start").and_then(|s| parse_time(&s));
        filter.end = form_value(form, "end").and_then(|s| parse_time(&s));
    }
    if let Some(set) = q.get_child("set", NS_RSM) {
        if let Some(max) = set
            .get_child("max", NS_RSM)
            .and_then(|m| m.text().trim().parse::<u32>().ok())
        {
            filter.limit = max;
        }
        filter.after = set
            .get_child("after", NS_RSM)
            .map(Element::text)
            .filter(|s| !s.is_empty());
        match set.get_child("before", NS_RSM).map(Element::text) {
            Some(b) if b.is_empty() => filter.from_end = true,
            Some(b) => filter.before = Some(b),
            None => {}
        }
    }
    let page = match state.store.query_archive(&me.username, &filter).await {
        Ok(p) => p,
        Err(StoreError::NotFound { .. }) => {
            return vec![xml::error_reply(iq, "item-not-found", None)]
        }
        Err(e) => {
            tracing::error!(error = %e, "archive query failed");
            return vec![xml::error_reply(iq, "internal-server-error", None)];
        }
    };
    let mut out = Vec::with_capacity(page.messages.len() + 1);
    for m in &page.messages {
        let Ok(original) = m.stanza.parse::<Element>() else {
            continue;
        };
        let mut result = el(
            "result",
            NS_MAM,
            &[("id", &m.stanza_id)],
            vec![el(
                "forwarded",
                crate::xml::NS_FORWARD,
                &[],
                vec![
                    el(
                        "delay",
                        "urn:xmpp:delay",
                        &[("stamp", &stamp(m.stored_at))],
                        vec![],
                    ),
                    original,
                ],
            )],
        );
        if let Some(qid) = &queryid {
            xml::set_attr(&mut result, "queryid", qid);
        }
        out.push(el(
            "message",
            NS_CLIENT,
            &[("to", &me.full), ("from", &me.bare)],
            vec![result],
        ));
    }
    let mut set = vec![];
    if let (Some(first), Some(last)) = (page.messages.first(), page.messages.last()) {
        set.push(text_el("first", NS_RSM, &first.stanza_id));
        set.push(text_el("last", NS_RSM, &last.stanza_id));
    }
    let complete = if page.complete { "true" } else { "false" };
    let mut fin = el(
        "fin",
        NS_MAM,
        &[("complete", complete)],
        vec![el("set", NS_RSM, &[], set)],
    );
    if let Some(qid) = &queryid {
        xml::set_attr(&mut fin, "queryid", qid);
    }
    out.push(xml::iq_result(iq, Some(fin)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_ids_sort_by_time_and_differ() {
        let a = new_archive_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_archive_id();
        assert_eq!(a.len(), 24);
        assert!(a < b, "{a} !< {b}");
        assert_ne!(a[12..], b[12..]);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)));
    }
}
