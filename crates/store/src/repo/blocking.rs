//! Blocklists (XEP-0191): the JIDs each user has blocked, as the server normalized them.

use crate::pool::{with_pool, with_writer};
use crate::{Store, StoreError};
use sqlx::Connection;

impl Store {
    /// The JIDs `username` has blocked, sorted.
    pub async fn blocklist(&self, username: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT jid FROM blocklist WHERE username = $1 ORDER BY jid",
        )
        .bind(username)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(|(j,)| j).collect())
    }

    /// Adds `jids` to the blocklist of `username` in one transaction (already blocked ones are
    /// kept); returns after the commit.
    pub async fn block(&self, username: &str, jids: &[String]) -> Result<(), StoreError> {
        self.for_each_jid(
            "INSERT INTO blocklist (username, jid) VALUES ($1, $2) ON CONFLICT (username, jid) DO NOTHING",
            username,
            jids,
        )
        .await
    }

    /// Removes `jids` from the blocklist of `username` in one transaction (JIDs that were not
    /// blocked are ignored); returns after the commit.
    pub async fn unblock(&self, username: &str, jids: &[String]) -> Result<(), StoreError> {
        self.for_each_jid(
            "DELETE FROM blocklist WHERE username = $1 AND jid = $2",
            username,
            jids,
        )
        .await
    }

    /// Runs `sql` with (`username`, jid) for each of `jids`, in one transaction.
    async fn for_each_jid(
        &self,
        sql: &str,
        username: &str,
        jids: &[String],
    ) -> Result<(), StoreError> {
        with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            for jid in jids {
                sqlx::query(sql).bind(username).bind(jid).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Empties the blocklist of `username`; returns after the commit.
    pub async fn unblock_all(&self, username: &str) -> Result<(), StoreError> {
        with_writer!(self, p => sqlx::query("DELETE FROM blocklist WHERE username = $1")
            .bind(username)
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

    fn jids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn block_unblock_and_unblock_all() {
        each_backend(|store| async move {
            for u in ["alice", "bob"] {
                store
                    .create_account(u, Role::Normal, &[], None)
                    .await
                    .unwrap();
            }
            assert!(store.blocklist("alice").await.unwrap().is_empty());
            store
                .block("alice", &jids(&["spam.example", "eve@example.com"]))
                .await
                .unwrap();
            // Blocking again is not an error and does not duplicate.
            store
                .block("alice", &jids(&["eve@example.com"]))
                .await
                .unwrap();
            store
                .block("bob", &jids(&["mallory@example.com"]))
                .await
                .unwrap();
            assert_eq!(
                store.blocklist("alice").await.unwrap(),
                jids(&["eve@example.com", "spam.example"])
            );
            store
                .unblock(
                    "alice",
                    &jids(&["eve@example.com", "never@blocked.example"]),
                )
                .await
                .unwrap();
            assert_eq!(
                store.blocklist("alice").await.unwrap(),
                jids(&["spam.example"])
            );
            store.unblock_all("alice").await.unwrap();
            assert!(store.blocklist("alice").await.unwrap().is_empty());
            // Another user's list is untouched.
            assert_eq!(
                store.blocklist("bob").await.unwrap(),
                jids(&["mallory@example.com"])
            );
        })
        .await;
    }

    #[tokio::test]
    async fn blocklist_goes_with_the_account() {
        each_backend(|store| async move {
            store
                .create_account("carol", Role::Normal, &[], None)
                .await
                .unwrap();
            store
                .block("carol", &jids(&["eve@example.com"]))
                .await
                .unwrap();
            store.delete_account("carol").await.unwrap();
            store
                .create_account("carol", Role::Normal, &[], None)
                .await
                .unwrap();
            assert!(store.blocklist("carol").await.unwrap().is_empty());
        })
        .await;
    }
}
