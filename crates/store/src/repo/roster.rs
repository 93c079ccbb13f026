//! Rosters (RFC 6121 §2): contacts, subscription states and a version counter per user.

use crate::pool::{with_pool, with_writer};
use crate::{now, Store, StoreError};
use sqlx::Connection;

/// Subscription state of a roster item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// Neither direction.
    None,
    /// We see their presence.
    To,
    /// They see ours.
    From,
    /// Both directions.
    Both,
}

impl Subscription {
    /// The RFC 6121 attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }

    /// Whether the contact receives our presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    /// Whether we receive the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// This state with the `to` direction set or cleared.
    pub fn with_to(self, on: bool) -> Self {
        Self::from_bits(on, self.has_from())
    }

    /// This state with the `from` direction set or cleared.
    pub fn with_from(self, on: bool) -> Self {
        Self::from_bits(self.has_to(), on)
    }

    fn from_bits(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One contact in a roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub contact: String,
    /// Name the user gave the contact.
    pub name: Option<String>,
    /// Subscription state.
    pub subscription: Subscription,
    /// We asked to see their presence and wait for an answer.
    pub ask_out: bool,
    /// They asked to see ours and wait for our answer.
    pub ask_in: bool,
    /// Roster groups.
    pub groups: Vec<String>,
}

impl RosterItem {
    /// A fresh item with no subscription.
    pub fn new(contact: &str) -> Self {
        RosterItem {
            contact: contact.to_string(),
            name: None,
            subscription: Subscription::None,
            ask_out: false,
            ask_in: false,
            groups: Vec::new(),
        }
    }
}

type RosterRow = (String, Option<String>, String, bool, bool, String);

fn item_from_row(r: RosterRow) -> Result<RosterItem, StoreError> {
    Ok(RosterItem {
        subscription: Subscription::parse(&r.2)
            .ok_or_else(|| StoreError::Corrupt(format!("subscription {:?}", r.2)))?,
        contact: r.0,
        name: r.1,
        ask_out: r.3,
        ask_in: r.4,
        groups: r
            .5
            .split('\n')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

impl Store {
    /// The user's roster and its version.
    pub async fn roster(&self, username: &str) -> Result<(Vec<RosterItem>, i64), StoreError> {
        Ok((
            self.roster_items(username).await?,
            self.roster_version(username).await?,
        ))
    }

    /// The roster's items, by contact, without the version (one query instead of two).
    pub async fn roster_items(&self, username: &str) -> Result<Vec<RosterItem>, StoreError> {
        let rows: Vec<RosterRow> = with_pool!(self, p => sqlx::query_as(
            "SELECT contact, name, subscription, ask_out, ask_in, groups FROM roster_items WHERE username = $1 ORDER BY contact",
        )
        .bind(username)
        .fetch_all(p)
        .await)?;
        rows.into_iter().map(item_from_row).collect()
    }

    /// One roster item.
    pub async fn roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        let row: Option<RosterRow> = with_pool!(self, p => sqlx::query_as(
            "SELECT contact, name, subscription, ask_out, ask_in, groups FROM roster_items WHERE username = $1 AND contact = $2",
        )
        .bind(username)
        .bind(contact)
        .fetch_optional(p)
        .await)?;
        row.map(item_from_row).transpose()
    }

    /// The roster version (0 for a user who never had a roster change).
    pub async fn roster_version(&self, username: &str) -> Result<i64, StoreError> {
        let v: Option<(i64,)> = with_pool!(self, p => sqlx::query_as("SELECT version FROM roster_versions WHERE username = $1")
            .bind(username)
            .fetch_optional(p)
            .await)?;
        Ok(v.map(|(v,)| v).unwrap_or(0))
    }

    /// Inserts or replaces an item and bumps the version, in one transaction. Returns the new version.
    pub async fn put_roster_item(
        &self,
        username: &str,
        item: &RosterItem,
    ) -> Result<i64, StoreError> {
        let groups = item.groups.join("\n");
        let version = now().max(1);
        let v = with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query(
                "INSERT INTO roster_items (username, contact, name, subscription, ask_out, ask_in, groups) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (username, contact) DO UPDATE SET name = excluded.name, subscription = excluded.subscription, \
                 ask_out = excluded.ask_out, ask_in = excluded.ask_in, groups = excluded.groups",
            )
            .bind(username)
            .bind(&item.contact)
            .bind(&item.name)
            .bind(item.subscription.as_str())
            .bind(item.ask_out)
            .bind(item.ask_in)
            .bind(&groups)
            .execute(&mut *tx)
            .await?;
            let v: (i64,) = sqlx::query_as(
                "INSERT INTO roster_versions (username, version) VALUES ($1, $2) ON CONFLICT (username) DO UPDATE \
                 SET version = CASE WHEN roster_versions.version >= excluded.version THEN roster_versions.version + 1 ELSE excluded.version END \
                 RETURNING version",
            )
            .bind(username)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            v.0
        });
        Ok(v)
    }

    /// Removes an item and bumps the version. Returns the new version, or `None` if there was no item.
    pub async fn remove_roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<i64>, StoreError> {
        let version = now().max(1);
        let v = with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            let r = sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
                .bind(username)
                .bind(contact)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if r == 0 {
                return Ok(None);
            }
            let v: (i64,) = sqlx::query_as(
                "INSERT INTO roster_versions (username, version) VALUES ($1, $2) ON CONFLICT (username) DO UPDATE \
                 SET version = CASE WHEN roster_versions.version >= excluded.version THEN roster_versions.version + 1 ELSE excluded.version END \
                 RETURNING version",
            )
            .bind(username)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            v.0
        });
        Ok(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;
    use crate::Role;

    #[tokio::test]
    async fn roster_items_and_versions() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            assert_eq!(store.roster("alice").await.unwrap(), (vec![], 0));
            let mut item = RosterItem::new("bob@example.com");
            item.groups = vec!["Friends".into(), "Family".into()];
            item.ask_out = true;
            let v1 = store.put_roster_item("alice", &item).await.unwrap();
            item.subscription = Subscription::To;
            item.ask_out = false;
            let v2 = store.put_roster_item("alice", &item).await.unwrap();
            assert!(v2 > v1);
            let (items, v) = store.roster("alice").await.unwrap();
            assert_eq!((items, v), (vec![item.clone()], v2));
            assert_eq!(
                store.roster_item("alice", "bob@example.com").await.unwrap(),
                Some(item)
            );
            let v3 = store
                .remove_roster_item("alice", "bob@example.com")
                .await
                .unwrap()
                .unwrap();
            assert!(v3 > v2);
            assert_eq!(
                store
                    .remove_roster_item("alice", "bob@example.com")
                    .await
                    .unwrap(),
                None
            );
        })
        .await;
    }

    #[test]
    fn subscription_bits() {
        assert_eq!(Subscription::None.with_to(true), Subscription::To);
        assert_eq!(Subscription::To.with_from(true), Subscription::Both);
        assert_eq!(Subscription::Both.with_to(false), Subscription::From);
        assert!(Subscription::From.has_from() && !Subscription::From.has_to());
    }
}
