//! Personal eventing (XEP-0163): each account's nodes, their configuration and their items.
//! Items are kept as serialized XML; the newest item of a node has the highest `item_seq`.

use crate::pool::{with_pool, with_writer};
use crate::{now, Store, StoreError};
use sqlx::Connection;

/// Configuration of one PEP node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepNode {
    /// Node name.
    pub node: String,
    /// `presence`, `open` or `whitelist` (whitelist = the owner only).
    pub access_model: String,
    /// Items kept; older ones are dropped when a publish exceeds it.
    pub max_items: i64,
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    /// Node name.
    pub node: String,
    /// Item id.
    pub id: String,
    /// The item's payload element, serialized.
    pub payload: String,
}

impl Store {
    /// The configuration of a node, if it exists.
    pub async fn pep_node(
        &self,
        username: &str,
        node: &str,
    ) -> Result<Option<PepNode>, StoreError> {
        let row: Option<(String, String, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT node, access_model, max_items FROM pep_nodes WHERE username = $1 AND node = $2",
        )
        .bind(username)
        .bind(node)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(node, access_model, max_items)| PepNode {
            node,
            access_model,
            max_items,
        }))
    }

    /// Every node of an account, by name.
    pub async fn pep_nodes(&self, username: &str) -> Result<Vec<PepNode>, StoreError> {
        let rows: Vec<(String, String, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT node, access_model, max_items FROM pep_nodes WHERE username = $1 ORDER BY node",
        )
        .bind(username)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(node, access_model, max_items)| PepNode {
                node,
                access_model,
                max_items,
            })
            .collect())
    }

    /// Creates a node or changes its configuration; surplus items are dropped at once.
    pub async fn pep_put_node(&self, username: &str, node: &PepNode) -> Result<(), StoreError> {
        with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query(
                "INSERT INTO pep_nodes (username, node, access_model, max_items, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (username, node) DO UPDATE SET access_model = excluded.access_model, max_items = excluded.max_items",
            )
            .bind(username)
            .bind(&node.node)
            .bind(&node.access_model)
            .bind(node.max_items)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            sqlx::query(TRIM)
                .bind(username)
                .bind(&node.node)
                .bind(node.max_items)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a node and its items; `false` if there was none.
    pub async fn pep_delete_node(&self, username: &str, node: &str) -> Result<bool, StoreError> {
        let n = with_writer!(self, p => sqlx::query("DELETE FROM pep_nodes WHERE username = $1 AND node = $2")
            .bind(username)
            .bind(node)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Publishes an item to an existing node (replacing an item with the same id, which becomes
    /// the newest) and trims the node to its `max_items`, in one transaction.
    pub async fn pep_publish(
        &self,
        username: &str,
        node: &PepNode,
        id: &str,
        payload: &str,
    ) -> Result<(), StoreError> {
        with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2 AND item_id = $3")
                .bind(username)
                .bind(&node.node)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO pep_items (username, node, item_id, payload, published_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(username)
            .bind(&node.node)
            .bind(id)
            .bind(payload)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            sqlx::query(TRIM)
                .bind(username)
                .bind(&node.node)
                .bind(node.max_items)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes one item; `false` if it did not exist.
    pub async fn pep_retract(
        &self,
        username: &str,
        node: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let n = with_writer!(self, p => sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2 AND item_id = $3")
            .bind(username)
            .bind(node)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Items of a node, newest first: all of them (up to `limit`), or only those with the given ids.
    pub async fn pep_items(
        &self,
        username: &str,
        node: &str,
        ids: &[String],
        limit: i64,
    ) -> Result<Vec<PepItem>, StoreError> {
        let rows: Vec<(String, String, String)> = with_pool!(self, p => sqlx::query_as(
            "SELECT node, item_id, payload FROM pep_items WHERE username = $1 AND node = $2 ORDER BY item_seq DESC LIMIT $3",
        )
        .bind(username)
        .bind(node)
        .bind(if ids.is_empty() { limit } else { i64::MAX })
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .filter(|(_, id, _)| ids.is_empty() || ids.contains(id))
            .map(|(node, id, payload)| PepItem { node, id, payload })
            .collect())
    }

    /// The newest item of every node of an account, with the node's access model.
    pub async fn pep_last_items(
        &self,
        username: &str,
    ) -> Result<Vec<(String, PepItem)>, StoreError> {
        let rows: Vec<(String, String, String, String)> = with_pool!(self, p => sqlx::query_as(
            "SELECT n.access_model, i.node, i.item_id, i.payload FROM pep_items i \
             JOIN pep_nodes n ON n.username = i.username AND n.node = i.node \
             WHERE i.username = $1 AND i.item_seq = \
               (SELECT MAX(j.item_seq) FROM pep_items j WHERE j.username = i.username AND j.node = i.node) \
             ORDER BY i.node",
        )
        .bind(username)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(access, node, id, payload)| (access, PepItem { node, id, payload }))
            .collect())
    }
}

/// Keeps the newest `$3` items of a node.
const TRIM: &str = "DELETE FROM pep_items WHERE username = $1 AND node = $2 AND item_seq NOT IN \
     (SELECT item_seq FROM pep_items WHERE username = $1 AND node = $2 ORDER BY item_seq DESC LIMIT $3)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;
    use crate::Role;

    fn node(name: &str, max: i64) -> PepNode {
        PepNode {
            node: name.into(),
            access_model: "presence".into(),
            max_items: max,
        }
    }

    #[tokio::test]
    async fn publish_replace_trim_retract_and_delete() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            let n = node("urn:xmpp:avatar:data", 2);
            store.pep_put_node("alice", &n).await.unwrap();
            for (id, body) in [("a", "<x>1</x>"), ("b", "<x>2</x>"), ("a", "<x>3</x>")] {
                store.pep_publish("alice", &n, id, body).await.unwrap();
            }
            let items = store.pep_items("alice", &n.node, &[], 10).await.unwrap();
            let got: Vec<(&str, &str)> = items
                .iter()
                .map(|i| (i.id.as_str(), i.payload.as_str()))
                .collect();
            assert_eq!(got, vec![("a", "<x>3</x>"), ("b", "<x>2</x>")]);
            store
                .pep_publish("alice", &n, "c", "<x>4</x>")
                .await
                .unwrap();
            let ids: Vec<String> = store
                .pep_items("alice", &n.node, &[], 10)
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect();
            assert_eq!(ids, vec!["c", "a"], "trimmed to max_items, newest first");
            let one = store
                .pep_items("alice", &n.node, &["a".to_string()], 1)
                .await
                .unwrap();
            assert_eq!(one.len(), 1);
            assert_eq!(one[0].payload, "<x>3</x>");

            // Lowering max_items drops surplus items at once.
            store
                .pep_put_node("alice", &node(&n.node, 1))
                .await
                .unwrap();
            assert_eq!(
                store
                    .pep_items("alice", &n.node, &[], 10)
                    .await
                    .unwrap()
                    .len(),
                1
            );
            let last = store.pep_last_items("alice").await.unwrap();
            assert_eq!(last.len(), 1);
            assert_eq!(last[0].1.id, "c");
            assert!(store.pep_retract("alice", &n.node, "c").await.unwrap());
            assert!(!store.pep_retract("alice", &n.node, "c").await.unwrap());
            assert!(store.pep_delete_node("alice", &n.node).await.unwrap());
            assert!(store.pep_node("alice", &n.node).await.unwrap().is_none());
            assert!(!store.pep_delete_node("alice", &n.node).await.unwrap());
        })
        .await;
    }

    #[tokio::test]
    async fn nodes_belong_to_one_account_and_go_with_it() {
        each_backend(|store| async move {
            for u in ["alice", "bob"] {
                store
                    .create_account(u, Role::Normal, &[], None)
                    .await
                    .unwrap();
            }
            let n = node("urn:xmpp:omemo:2:devices", 1);
            store.pep_put_node("alice", &n).await.unwrap();
            store
                .pep_publish("alice", &n, "current", "<d/>")
                .await
                .unwrap();
            assert!(store.pep_node("bob", &n.node).await.unwrap().is_none());
            assert!(store.pep_last_items("bob").await.unwrap().is_empty());
            assert_eq!(store.pep_nodes("alice").await.unwrap(), vec![n.clone()]);
            store.delete_account("alice").await.unwrap();
            assert!(store.pep_nodes("alice").await.unwrap().is_empty());
        })
        .await;
    }
}
