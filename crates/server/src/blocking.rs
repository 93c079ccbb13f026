//! Blocking Command (XEP-0191) with spam and abuse reports (XEP-0377).
//!
//! Blocklists live in the store and are cached here ([`Blocklists`]) so that routing can check
//! every stanza without a query. [`gate`] is the one check routing applies to a stanza with a
//! `to`: a user's stanza to someone they blocked is refused with `<blocked/>`, a stanza to
//! someone who blocked the sender is dropped (requests get `service-unavailable`, as for an
//! absent user). Entries match as in XEP-0016 §2.1: full JID, bare JID, `domain/resource` or
//! domain.

use crate::routing::{self, Sender, Target};
use crate::state::State;
use crate::xml::{self, el, text_el, NS_CLIENT};
use minidom::Element;
use snikket_store::{AccountState, Role, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// `urn:xmpp:blocking`.
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
/// `urn:xmpp:blocking:errors`.
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0377 version 0 (`<report><spam/></report>`).
pub const NS_REPORTING_0: &str = "urn:xmpp:reporting:0";
/// XEP-0377 version 1 (`<report reason='…'/>`).
pub const NS_REPORTING_1: &str = "urn:xmpp:reporting:1";
/// XEP-0377 version 0 reason features.
pub const REPORTING_REASONS_0: [&str; 2] = [
    "urn:xmpp:reporting:reason:spam:0",
    "urn:xmpp:reporting:reason:abuse:0",
];

/// The cache is emptied when it holds this many users (everything is in the store).
const MAX_CACHED: usize = 50_000;

/// One user's blocked JIDs, normalized.
pub type Blocklist = Arc<HashSet<String>>;

/// The blocklists of users, loaded on first use and replaced on every change.
#[derive(Default)]
pub struct Blocklists {
    lists: Mutex<HashMap<String, Blocklist>>,
    /// Serializes changes, so the cache always ends with what was committed last.
    writes: tokio::sync::Mutex<()>,
}

impl Blocklists {
    fn cached(&self, username: &str) -> Option<Blocklist> {
        let map = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        map.get(username).cloned()
    }

    /// The blocklist of `username`, from the cache or the store.
    pub async fn of(&self, store: &Store, username: &str) -> Result<Blocklist, StoreError> {
        if let Some(list) = self.cached(username) {
            return Ok(list);
        }
        let loaded = load(store, username).await?;
        let mut map = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED {
            // Addresses of accounts that do not exist can be made up without end: start over.
            map.clear();
        }
        // A change that committed meanwhile has put the newer list: keep that one.
        Ok(map.entry(username.to_string()).or_insert(loaded).clone())
    }

    /// Drops the cached list of `username`, so that the next check reads the store (at every
    /// login: the account may have been deleted and created again meanwhile).
    pub fn forget(&self, username: &str) {
        let mut map = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(username);
    }

    /// Applies `change` in the store, then caches the committed list. Returns (before, after).
    async fn change(
        &self,
        store: &Store,
        username: &str,
        change: Change<'_>,
    ) -> Result<(Blocklist, Blocklist), StoreError> {
        let _guard = self.writes.lock().await;
        let before = self.of(store, username).await?;
        match change {
            Change::Block(jids) => store.block(username, jids).await?,
            Change::Unblock(jids) => store.unblock(username, jids).await?,
            Change::UnblockAll => store.unblock_all(username).await?,
        }
        let after = load(store, username).await?;
        self.lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(username.to_string(), after.clone());
        Ok((before, after))
    }
}

async fn load(store: &Store, username: &str) -> Result<Blocklist, StoreError> {
    Ok(Arc::new(
        store.blocklist(username).await?.into_iter().collect(),
    ))
}

enum Change<'a> {
    Block(&'a [String]),
    Unblock(&'a [String]),
    UnblockAll,
}

/// Whether `list` blocks `jid` (XEP-0016 §2.1: full JID, bare JID, `domain/resource`, domain).
pub fn matches(list: &HashSet<String>, jid: &jid::Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let domain = jid.domain().as_str();
    let mut keys = vec![
        jid.to_string(),
        jid.to_bare().to_string(),
        domain.to_string(),
    ];
    if let Some(r) = jid.resource() {
        keys.push(format!("{domain}/{}", r.as_str()));
    }
    keys.iter().any(|k| list.contains(k))
}

/// Whether `username` blocks `jid`. A failed lookup is logged and lets the stanza through.
pub(crate) async fn blocks(state: &State, username: &str, jid: &jid::Jid) -> bool {
    match state.blocklists.of(&state.store, username).await {
        Ok(list) => matches(&list, jid),
        Err(e) => {
            tracing::error!(error = %e, user = %username, "blocklist load failed");
            false
        }
    }
}

/// Whether local user `owner` blocks local user `other` (for stanzas the server makes on
/// `owner`'s behalf, such as PEP notifications).
pub async fn blocks_local(state: &State, owner: &str, other: &str) -> bool {
    let bare = format!("{other}@{}", state.config.domain.ascii);
    match jid::Jid::new(&bare) {
        Ok(j) => owner != other && blocks(state, owner, &j).await,
        Err(_) => false,
    }
}

/// Which side of a stanza between a local user and an address refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Neither.
    No,
    /// The sender blocked the recipient.
    BySender,
    /// The (local) recipient blocked the sender.
    ByRecipient,
}

/// Checks both blocklists for a stanza from `me` to `to`. The server itself and the user's own
/// addresses are never blocked.
pub async fn check(state: &State, me: &Sender, to: &str) -> Blocked {
    let Ok(to_jid) = jid::Jid::new(to) else {
        return Blocked::No;
    };
    let recipient = match routing::target(state, to) {
        Target::Local { username, .. } if username == me.username => return Blocked::No,
        Target::Local { username, .. } => Some(username),
        Target::Remote(_) => None,
        Target::Server | Target::Share | Target::Invalid => return Blocked::No,
    };
    if blocks(state, &me.username, &to_jid).await {
        return Blocked::BySender;
    }
    if let (Some(r), Ok(from)) = (recipient, jid::Jid::new(&me.full)) {
        if blocks(state, &r, &from).await {
            return Blocked::ByRecipient;
        }
    }
    Blocked::No
}

/// Applies the blocklists to a client stanza with a `to`. `None`: route it; `Some(replies)`: it
/// stops here, and `replies` go back to the sender.
pub async fn gate(state: &State, me: &Sender, stanza: &Element) -> Option<Vec<Element>> {
    let to = stanza.attr("to")?;
    let blocked = check(state, me, to).await;
    if blocked == Blocked::No || (unsubscription(stanza) && blocked == Blocked::BySender) {
        // Cancelling a blocked contact's subscription must stay possible.
        return None;
    }
    tracing::debug!(user = %me.username, kind = stanza.name(), ?blocked, "stanza blocked");
    Some(refusal(stanza, blocked).into_iter().collect())
}

fn unsubscription(stanza: &Element) -> bool {
    stanza.name() == "presence"
        && matches!(stanza.attr("type"), Some("unsubscribe" | "unsubscribed"))
}

/// The reply to a blocked stanza, if it gets one.
fn refusal(stanza: &Element, blocked: Blocked) -> Option<Element> {
    let kind = stanza.attr("type").unwrap_or("");
    let request = match stanza.name() {
        "iq" => matches!(kind, "get" | "set"),
        "message" => matches!(kind, "" | "normal" | "chat"),
        _ => false,
    };
    match blocked {
        Blocked::No => None,
        // The user is told why: XEP-0191 not-acceptable with <blocked/>.
        Blocked::BySender if kind != "error" && !(stanza.name() == "iq" && kind == "result") => {
            Some(blocked_error(stanza))
        }
        // Presence is dropped without a word; requests look like an unavailable user.
        Blocked::ByRecipient if request => {
            Some(xml::error_reply(stanza, "service-unavailable", None))
        }
        _ => None,
    }
}

fn blocked_error(stanza: &Element) -> Element {
    let mut reply = xml::error_reply(
        stanza,
        "not-acceptable",
        Some("You have blocked this address"),
    );
    if let Some(err) = reply.get_child_mut("error", NS_CLIENT) {
        xml::set_attr(err, "type", "cancel");
        err.append_child(el("blocked", NS_BLOCKING_ERRORS, &[], vec![]));
    }
    reply
}

/// A spam or abuse report attached to a blocked item (XEP-0377).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    jid: String,
    kind: &'static str,
    text: Option<String>,
}

/// Reads a `<report/>` in either XEP-0377 version from a `<block><item/>`.
fn report_of(item: &Element, jid: &str) -> Option<Report> {
    let (report, kind) = if let Some(r) = item.get_child("report", NS_REPORTING_1) {
        let kind = match r.attr("reason") {
            Some("urn:xmpp:reporting:spam") => "spam",
            Some("urn:xmpp:reporting:abuse") => "abuse",
            _ => "unknown",
        };
        (r, kind)
    } else {
        let r = item.get_child("report", NS_REPORTING_0)?;
        let kind = if r.has_child("spam", NS_REPORTING_0) {
            "spam"
        } else if r.has_child("abuse", NS_REPORTING_0) {
            "abuse"
        } else {
            "unknown"
        };
        (r, kind)
    };
    let text = report
        .children()
        .find(|c| c.name() == "text")
        .map(|t| t.text().trim().to_string())
        .filter(|t| !t.is_empty());
    Some(Report {
        jid: jid.to_string(),
        kind,
        text,
    })
}

/// The normalized JIDs of the items of a `<block/>` or `<unblock/>`, with reports.
fn items(payload: &Element) -> Result<(Vec<String>, Vec<Report>), &'static str> {
    let mut jids = Vec::new();
    let mut reports = Vec::new();
    for item in payload.children().filter(|c| c.name() == "item") {
        let jid = item
            .attr("jid")
            .and_then(|j| jid::Jid::new(j).ok())
            .ok_or("jid-malformed")?
            .to_string();
        reports.extend(report_of(item, &jid));
        if !jids.contains(&jid) {
            jids.push(jid);
        }
    }
    Ok((jids, reports))
}

/// `<item jid=…/>` children.
fn item_els(jids: impl IntoIterator<Item = String>) -> Vec<Element> {
    jids.into_iter()
        .map(|j| el("item", NS_BLOCKING, &[("jid", &j)], vec![]))
        .collect()
}

/// Blocking IQs a user sends about their own account.
pub async fn iq(state: &State, me: &Sender, iq: &Element) -> Element {
    let Some(payload) = xml::payload(iq) else {
        return xml::error_reply(iq, "bad-request", None);
    };
    match (iq.attr("type"), payload.name()) {
        (Some("get"), "blocklist") => get(state, me, iq).await,
        (Some("set"), "block" | "unblock") => set(state, me, iq, payload).await,
        _ => xml::error_reply(iq, "bad-request", None),
    }
}

async fn get(state: &State, me: &Sender, iq: &Element) -> Element {
    match state.blocklists.of(&state.store, &me.username).await {
        Ok(list) => {
            state
                .router
                .set_blocklist_interest(&me.username, &me.resource);
            let mut jids: Vec<String> = list.iter().cloned().collect();
            jids.sort_unstable();
            xml::iq_result(iq, Some(el("blocklist", NS_BLOCKING, &[], item_els(jids))))
        }
        Err(e) => {
            tracing::error!(error = %e, user = %me.username, "blocklist load failed");
            xml::error_reply(iq, "internal-server-error", None)
        }
    }
}

async fn set(state: &State, me: &Sender, iq: &Element, payload: &Element) -> Element {
    let (jids, reports) = match items(payload) {
        Ok(v) => v,
        Err(condition) => return xml::error_reply(iq, condition, None),
    };
    let block = payload.name() == "block";
    let change = match (block, jids.is_empty()) {
        (true, true) => {
            return xml::error_reply(iq, "bad-request", Some("Nothing to block"));
        }
        (true, false) => Change::Block(&jids),
        (false, true) => Change::UnblockAll,
        (false, false) => Change::Unblock(&jids),
    };
    let (before, after) = match state
        .blocklists
        .change(&state.store, &me.username, change)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, user = %me.username, "blocklist change failed");
            return xml::error_reply(iq, "internal-server-error", None);
        }
    };
    tracing::info!(user = %me.username, block, count = jids.len(), "blocklist changed");
    state.s2s.admin_blocks_changed();
    push(state, me, payload.name(), &jids);
    routing::presence_after_block(state, me, &before, &after).await;
    for report in &reports {
        notify_admins(state, me, report).await;
    }
    xml::iq_result(iq, None)
}

/// Pushes a change to the sessions that fetched the blocklist (XEP-0191 §3.3, §3.4).
fn push(state: &State, me: &Sender, name: &str, jids: &[String]) {
    let id = format!("block{}", snikket_store::now());
    state
        .router
        .to_blocklist_interested(&me.username, |resource| {
            let to = format!("{}/{resource}", me.bare);
            el(
                "iq",
                NS_CLIENT,
                &[("type", "set"), ("id", &id), ("to", &to)],
                vec![el(name, NS_BLOCKING, &[], item_els(jids.to_vec()))],
            )
        });
}

/// The text admins get for a report (spec 3.4, `mod_watch_spam_reports`).
fn report_text(reporter: &str, report: &Report) -> String {
    format!(
        "{reporter} reported {} from {}: {}",
        report.kind,
        report.jid,
        report.text.as_deref().unwrap_or("no reason given")
    )
}

/// Logs a report and tells every active admin, as a chat message from the server.
async fn notify_admins(state: &State, me: &Sender, report: &Report) {
    tracing::warn!(
        reporter = %me.bare,
        reported = %report.jid,
        kind = report.kind,
        with_reason = report.text.is_some(),
        "abuse report received"
    );
    let admins = match state.store.accounts().await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "admin lookup for a report failed");
            return;
        }
    };
    let domain = &state.config.domain.ascii;
    let body = report_text(&me.bare, report);
    for admin in admins
        .iter()
        .filter(|a| a.role == Role::Admin && a.state == AccountState::Active)
    {
        let to = format!("{}@{domain}", admin.username);
        let id = format!("report{}", snikket_store::now());
        let msg = el(
            "message",
            NS_CLIENT,
            &[("from", domain), ("to", &to), ("type", "chat"), ("id", &id)],
            vec![text_el("body", NS_CLIENT, &body)],
        );
        let errors = routing::deliver_message(state, &admin.username, None, "chat", msg).await;
        if !errors.is_empty() {
            tracing::warn!(admin = %admin.username, "report notification not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn jid(s: &str) -> jid::Jid {
        jid::Jid::new(s).unwrap()
    }

    #[test]
    fn entries_match_as_in_xep_0016() {
        let from = jid("eve@evil.example/phone");
        for entry in [
            "eve@evil.example/phone",
            "eve@evil.example",
            "evil.example/phone",
            "evil.example",
        ] {
            assert!(matches(&list(&[entry]), &from), "{entry} should match");
        }
        for entry in [
            "eve@evil.example/laptop",
            "bob@evil.example",
            "evil.example/laptop",
            "other.example",
            "eve@other.example",
            "sub.evil.example",
        ] {
            assert!(!matches(&list(&[entry]), &from), "{entry} should not match");
        }
        assert!(!matches(&list(&[]), &from));
    }

    #[test]
    fn bare_and_domain_addresses_match_only_wider_entries() {
        let bare = jid("eve@evil.example");
        assert!(matches(&list(&["eve@evil.example"]), &bare));
        assert!(matches(&list(&["evil.example"]), &bare));
        assert!(!matches(&list(&["eve@evil.example/phone"]), &bare));
        let domain = jid("evil.example");
        assert!(matches(&list(&["evil.example"]), &domain));
        assert!(!matches(&list(&["eve@evil.example"]), &domain));
    }

    #[test]
    fn entries_are_normalized_like_addresses() {
        // The stored form is what jid::Jid prints; a differently cased address still matches.
        let stored = jid("Eve@Evil.Example").to_bare().to_string();
        assert!(matches(&list(&[&stored]), &jid("eve@evil.example/x")));
    }

    #[tokio::test]
    async fn the_cache_serves_checks_until_a_change_or_a_login() {
        let dir = snikket_testkit::temp_dir();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = Store::open_url(&url).await.unwrap();
        store
            .create_account("alice", Role::Normal, &[], None)
            .await
            .unwrap();
        let cache = Blocklists::default();
        let eve = jid("eve@evil.example/x");
        assert!(!matches(&cache.of(&store, "alice").await.unwrap(), &eve));
        let jids = vec!["evil.example".to_string()];
        let (before, after) = cache
            .change(&store, "alice", Change::Block(&jids))
            .await
            .unwrap();
        assert!(!matches(&before, &eve) && matches(&after, &eve));
        // Written behind the cache's back (as a deleted and recreated account would be).
        store.unblock_all("alice").await.unwrap();
        assert!(matches(&cache.of(&store, "alice").await.unwrap(), &eve));
        cache.forget("alice");
        assert!(!matches(&cache.of(&store, "alice").await.unwrap(), &eve));
        store.close().await;
    }

    fn msg(kind: &str) -> Element {
        el(
            "message",
            NS_CLIENT,
            &[
                ("type", kind),
                ("from", "a@d/r"),
                ("to", "b@d"),
                ("id", "1"),
            ],
            vec![],
        )
    }

    #[test]
    fn refusals_follow_xep_0191() {
        let r = refusal(&msg("chat"), Blocked::BySender).unwrap();
        let err = r.get_child("error", NS_CLIENT).unwrap();
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err.has_child("not-acceptable", xml::NS_STANZAS));
        assert!(err.has_child("blocked", NS_BLOCKING_ERRORS));
        assert_eq!(r.attr("to"), Some("a@d/r"));
        let r = refusal(&msg("chat"), Blocked::ByRecipient).unwrap();
        let err = r.get_child("error", NS_CLIENT).unwrap();
        assert!(err.has_child("service-unavailable", xml::NS_STANZAS));
        assert!(!err.has_child("blocked", NS_BLOCKING_ERRORS));
        // No error for errors, headlines to a blocker, presence to a blocker.
        assert!(refusal(&msg("error"), Blocked::BySender).is_none());
        assert!(refusal(&msg("headline"), Blocked::ByRecipient).is_none());
        let presence = el("presence", NS_CLIENT, &[("to", "b@d")], vec![]);
        assert!(refusal(&presence, Blocked::ByRecipient).is_none());
        assert!(refusal(&presence, Blocked::BySender).is_some());
        assert!(refusal(&msg("chat"), Blocked::No).is_none());
    }

    #[test]
    fn items_are_normalized_and_reports_read_in_both_versions() {
        let block: Element = "<block xmlns='urn:xmpp:blocking'>\
            <item jid='Spam@Evil.Example'><report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:spam'><text>buy now</text></report></item>\
            <item jid='troll@evil.example'><report xmlns='urn:xmpp:reporting:0'><abuse/></report></item>\
            <item jid='spam@evil.example'/>\
            <item jid='quiet@evil.example'/></block>"
            .parse()
            .unwrap();
        let (jids, reports) = items(&block).unwrap();
        assert_eq!(
            jids,
            vec![
                "spam@evil.example",
                "troll@evil.example",
                "quiet@evil.example"
            ]
        );
        assert_eq!(reports.len(), 2);
        assert_eq!(
            report_text("alice@d", &reports[0]),
            "alice@d reported spam from spam@evil.example: buy now"
        );
        assert_eq!(
            report_text("alice@d", &reports[1]),
            "alice@d reported abuse from troll@evil.example: no reason given"
        );
        let bad: Element = "<block xmlns='urn:xmpp:blocking'><item jid='@evil.example'/></block>"
            .parse()
            .unwrap();
        assert_eq!(items(&bad).unwrap_err(), "jid-malformed");
        let missing: Element = "<block xmlns='urn:xmpp:blocking'><item/></block>"
            .parse()
            .unwrap();
        assert_eq!(items(&missing).unwrap_err(), "jid-malformed");
    }
}
