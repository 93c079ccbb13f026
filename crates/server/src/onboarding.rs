//! What follows the creation of an account from an invitation, on both paths (XMPP in-band
//! registration in `c2s/register.rs` and the portal's `PublicInvites.Register`), spec 3.3:
//! the invitation's circles are joined, and a contact (roster) invitation makes the inviter and
//! the new user mutual contacts (a contact invitation without circles joins the default circle,
//! as Snikket's `mod_invites_default_group` does).

use snikket_store::{
    Invite, InviteKind, RosterItem, Store, StoreError, Subscription, DEFAULT_CIRCLE_ID,
};

/// A roster item written for `owner`, to be pushed to their online sessions.
#[derive(Debug, Clone)]
pub struct RosterChange {
    /// Whose roster changed.
    pub owner: String,
    /// The item as stored.
    pub item: RosterItem,
    /// The roster version after the change.
    pub version: i64,
}

/// Joins circles and sets up the inviter's contact; failures are logged, never undo the
/// registration (the account exists and the invitation is consumed).
pub async fn after_registration(
    store: &Store,
    domain: &str,
    username: &str,
    invite: &Invite,
) -> Vec<RosterChange> {
    let mut circles = invite.circles.clone();
    if invite.kind == InviteKind::Contact && circles.is_empty() {
        circles.push(DEFAULT_CIRCLE_ID.to_string());
    }
    for circle in &circles {
        if let Err(e) = store.add_circle_member(circle, username).await {
            tracing::warn!(error = %e, circle = %circle, "adding new user to circle failed");
        }
    }
    let Some(inviter) = invite.inviter.as_deref() else {
        return Vec::new();
    };
    if invite.kind != InviteKind::Contact || inviter == username {
        return Vec::new();
    }
    match mutual_subscription(store, domain, inviter, username).await {
        Ok(changes) => changes,
        Err(e) => {
            tracing::warn!(error = %e, inviter = %inviter, "adding the inviter as a contact failed");
            Vec::new()
        }
    }
}

/// Makes `a` and `b` contacts with a subscription in both directions, keeping any name and
/// groups an existing item has.
async fn mutual_subscription(
    store: &Store,
    domain: &str,
    a: &str,
    b: &str,
) -> Result<Vec<RosterChange>, StoreError> {
    if store.account(a).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut changes = Vec::with_capacity(2);
    for (owner, contact) in [(a, b), (b, a)] {
        let jid = format!("{contact}@{domain}");
        let mut item = store
            .roster_item(owner, &jid)
            .await?
            .unwrap_or_else(|| RosterItem::new(&jid));
        item.subscription = Subscription::Both;
        item.ask_out = false;
        item.ask_in = false;
        let version = store.put_roster_item(owner, &item).await?;
        changes.push(RosterChange {
            owner: owner.to_string(),
            item,
            version,
        });
    }
    Ok(changes)
}
