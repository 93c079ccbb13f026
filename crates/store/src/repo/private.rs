//! Private XML storage (XEP-0049): one serialized element per user, element name and namespace.
//!
//! `private_get` and `private_set` are deliberately plain so that a later migration (XEP-0048
//! bookmarks to XEP-0402 PEP) can read and clear what clients stored here.

use crate::pool::{with_pool, with_writer};
use crate::{Store, StoreError};

impl Store {
    /// The stored element `<name xmlns=ns>` of `username`, serialized, if any.
    pub async fn private_get(
        &self,
        username: &str,
        name: &str,
        ns: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM private_storage WHERE username = $1 AND name = $2 AND ns = $3",
        )
        .bind(username)
        .bind(name)
        .bind(ns)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(x,)| x))
    }

    /// Stores (or replaces) the serialized element `<name xmlns=ns>` of `username`; returns after
    /// the commit.
    pub async fn private_set(
        &self,
        username: &str,
        name: &str,
        ns: &str,
        xml: &str,
    ) -> Result<(), StoreError> {
        with_writer!(self, p => sqlx::query(
            "INSERT INTO private_storage (username, name, ns, payload) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username, name, ns) DO UPDATE SET payload = excluded.payload",
        )
        .bind(username)
        .bind(name)
        .bind(ns)
        .bind(xml)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests_support::each_backend;
    use crate::Role;

    const NS: &str = "storage:bookmarks";

    #[tokio::test]
    async fn private_set_replaces_and_is_per_user_name_and_namespace() {
        each_backend(|store| async move {
            for u in ["alice", "bob"] {
                store
                    .create_account(u, Role::Normal, &[], None)
                    .await
                    .unwrap();
            }
            assert_eq!(
                store.private_get("alice", "storage", NS).await.unwrap(),
                None
            );
            store
                .private_set(
                    "alice",
                    "storage",
                    NS,
                    "<storage xmlns='storage:bookmarks'/>",
                )
                .await
                .unwrap();
            store
                .private_set(
                    "alice",
                    "storage",
                    NS,
                    "<storage xmlns='storage:bookmarks'>2</storage>",
                )
                .await
                .unwrap();
            assert_eq!(
                store
                    .private_get("alice", "storage", NS)
                    .await
                    .unwrap()
                    .as_deref(),
                Some("<storage xmlns='storage:bookmarks'>2</storage>")
            );
            // Same name in another namespace, same key for another user: separate items.
            assert_eq!(
                store
                    .private_get("alice", "storage", "other:ns")
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(store.private_get("bob", "storage", NS).await.unwrap(), None);
            assert_eq!(store.private_get("alice", "other", NS).await.unwrap(), None);
        })
        .await;
    }
}
