//! Offline messages (XEP-0160): kept until a session of the user is available.

use crate::pool::{with_pool, with_writer};
use crate::{now, Store, StoreError};

impl Store {
    /// Stores a serialized message stanza for `username`; returns after the commit.
    pub async fn store_offline(&self, username: &str, stanza: &str) -> Result<(), StoreError> {
        with_writer!(self, p => sqlx::query("INSERT INTO offline_messages (username, stanza, stored_at) VALUES ($1, $2, $3)")
            .bind(username)
            .bind(stanza)
            .bind(now())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The stored messages of `username`, oldest first, with their ids.
    pub async fn offline_messages(&self, username: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let rows: Vec<(i64, String)> = with_pool!(self, p => sqlx::query_as(
            "SELECT offline_id, stanza FROM offline_messages WHERE username = $1 ORDER BY offline_id",
        )
        .bind(username)
        .fetch_all(p)
        .await)?;
        Ok(rows)
    }

    /// Deletes delivered messages up to and including `last_id`.
    pub async fn delete_offline(&self, username: &str, last_id: i64) -> Result<(), StoreError> {
        with_writer!(self, p => sqlx::query("DELETE FROM offline_messages WHERE username = $1 AND offline_id <= $2")
            .bind(username)
            .bind(last_id)
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

    #[tokio::test]
    async fn offline_round_trip() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            store
                .store_offline("alice", "<message>1</message>")
                .await
                .unwrap();
            store
                .store_offline("alice", "<message>2</message>")
                .await
                .unwrap();
            let msgs = store.offline_messages("alice").await.unwrap();
            assert_eq!(msgs.len(), 2);
            assert_eq!(msgs[0].1, "<message>1</message>");
            store.delete_offline("alice", msgs[0].0).await.unwrap();
            assert_eq!(store.offline_messages("alice").await.unwrap().len(), 1);
        })
        .await;
    }
}
