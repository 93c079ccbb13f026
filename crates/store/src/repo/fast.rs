//! FAST tokens (XEP-0484): per account and client, the SHA-256 of each token handed out, with
//! its expiry. A client keeps its current token until it first uses the next one (rotation), a
//! password change revokes them all (`set_credentials`), and expired tokens are never returned.

use crate::pool::{with_pool, with_writer};
use crate::{now, Store, StoreError};
use sqlx::Connection;

/// A stored token: its SHA-256 and when it stops working (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastToken {
    /// SHA-256 of the token string.
    pub token_hash: Vec<u8>,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

impl Store {
    /// The unexpired tokens of `client_id` for `username`, newest first.
    pub async fn fast_tokens(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Vec<FastToken>, StoreError> {
        let rows: Vec<(Vec<u8>, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT token_hash, expires_at FROM fast_tokens WHERE username = $1 AND client_id = $2 AND expires_at > $3 ORDER BY issued_at DESC",
        )
        .bind(username)
        .bind(client_id)
        .bind(now())
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(token_hash, expires_at)| FastToken {
                token_hash,
                expires_at,
            })
            .collect())
    }

    /// Stores a new token for `client_id`. Every other token of that client is dropped except
    /// `keep` (the token this login used, valid until the new one is first used).
    pub async fn issue_fast_token(
        &self,
        username: &str,
        client_id: &str,
        token_hash: &[u8],
        expires_at: i64,
        keep: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let keep = keep.unwrap_or(&[]).to_vec();
        with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query("DELETE FROM fast_tokens WHERE username = $1 AND ((client_id = $2 AND token_hash <> $3) OR expires_at <= $4)")
                .bind(username)
                .bind(client_id)
                .bind(&keep)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO fast_tokens (username, client_id, token_hash, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(username)
                .bind(client_id)
                .bind(token_hash)
                .bind(now())
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records that `token_hash` was used: any older token of the client is retired.
    pub async fn fast_token_used(
        &self,
        username: &str,
        client_id: &str,
        token_hash: &[u8],
    ) -> Result<(), StoreError> {
        self.delete_for_client(
            "DELETE FROM fast_tokens WHERE username = $1 AND client_id = $2 AND token_hash <> $3 AND issued_at <= (SELECT issued_at FROM fast_tokens WHERE username = $1 AND client_id = $2 AND token_hash = $3)",
            username,
            client_id,
            token_hash,
        )
        .await
    }

    /// Revokes one token (the client asked to invalidate it).
    pub async fn revoke_fast_token(
        &self,
        username: &str,
        client_id: &str,
        token_hash: &[u8],
    ) -> Result<(), StoreError> {
        self.delete_for_client(
            "DELETE FROM fast_tokens WHERE username = $1 AND client_id = $2 AND token_hash = $3",
            username,
            client_id,
            token_hash,
        )
        .await
    }

    async fn delete_for_client(
        &self,
        sql: &str,
        username: &str,
        client_id: &str,
        token_hash: &[u8],
    ) -> Result<(), StoreError> {
        with_writer!(self, p => sqlx::query(sql)
            .bind(username)
            .bind(client_id)
            .bind(token_hash)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The clients of `username` holding unexpired tokens: (client id, first issued, last
    /// issued), oldest client first.
    pub async fn fast_clients(
        &self,
        username: &str,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT client_id, MIN(issued_at), MAX(issued_at) FROM fast_tokens \
             WHERE username = $1 AND expires_at > $2 GROUP BY client_id ORDER BY MIN(issued_at), client_id",
        )
        .bind(username)
        .bind(now())
        .fetch_all(p)
        .await)?;
        Ok(rows)
    }

    /// Revokes every token of one client; returns how many there were.
    pub async fn revoke_fast_client(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<u64, StoreError> {
        let n = with_pool!(self, p => sqlx::query("DELETE FROM fast_tokens WHERE username = $1 AND client_id = $2")
            .bind(username)
            .bind(client_id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// Revokes every token of `username`; returns how many there were.
    pub async fn revoke_fast_tokens(&self, username: &str) -> Result<u64, StoreError> {
        let n = with_pool!(self, p => sqlx::query("DELETE FROM fast_tokens WHERE username = $1")
            .bind(username)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::tests_support::each_backend;
    use crate::{now, Role};

    #[tokio::test]
    async fn tokens_rotate_expire_and_are_revoked_by_a_password_change() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            let later = now() + 3600;
            // A password login issues the first token; a second one replaces it.
            store
                .issue_fast_token("alice", "phone", b"t1", later, None)
                .await
                .unwrap();
            store
                .issue_fast_token("alice", "phone", b"t2", later, None)
                .await
                .unwrap();
            let hashes =
                |v: Vec<crate::FastToken>| v.into_iter().map(|t| t.token_hash).collect::<Vec<_>>();
            assert_eq!(
                hashes(store.fast_tokens("alice", "phone").await.unwrap()),
                vec![b"t2".to_vec()]
            );
            // A token login that asks for the next token keeps the one it used…
            store
                .issue_fast_token("alice", "phone", b"t3", later, Some(b"t2"))
                .await
                .unwrap();
            let both = hashes(store.fast_tokens("alice", "phone").await.unwrap());
            assert_eq!(both.len(), 2);
            assert!(both.contains(&b"t2".to_vec()) && both.contains(&b"t3".to_vec()));
            // …until the next one is used.
            store
                .fast_token_used("alice", "phone", b"t3")
                .await
                .unwrap();
            assert_eq!(
                hashes(store.fast_tokens("alice", "phone").await.unwrap()),
                vec![b"t3".to_vec()]
            );
            // Other clients are separate; expired tokens are not returned.
            store
                .issue_fast_token("alice", "laptop", b"old", now() - 1, None)
                .await
                .unwrap();
            assert!(store
                .fast_tokens("alice", "laptop")
                .await
                .unwrap()
                .is_empty());
            store
                .revoke_fast_token("alice", "phone", b"t3")
                .await
                .unwrap();
            assert!(store
                .fast_tokens("alice", "phone")
                .await
                .unwrap()
                .is_empty());
            // A password change revokes every token.
            store
                .issue_fast_token("alice", "phone", b"t4", later, None)
                .await
                .unwrap();
            store.set_credentials("alice", &[]).await.unwrap();
            assert!(store
                .fast_tokens("alice", "phone")
                .await
                .unwrap()
                .is_empty());
            assert_eq!(store.revoke_fast_tokens("alice").await.unwrap(), 0);
        })
        .await;
    }
    #[tokio::test]
    async fn clients_with_tokens_are_listed_and_revoked_one_by_one() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            let later = now() + 3600;
            store
                .issue_fast_token("alice", "phone", b"p1", later, None)
                .await
                .unwrap();
            store
                .issue_fast_token("alice", "laptop", b"l1", later, None)
                .await
                .unwrap();
            store
                .issue_fast_token("alice", "gone", b"g1", now() - 1, None)
                .await
                .unwrap();
            let clients: Vec<String> = store
                .fast_clients("alice")
                .await
                .unwrap()
                .into_iter()
                .map(|(c, first, last)| {
                    assert!(first <= last);
                    c
                })
                .collect();
            assert_eq!(clients.len(), 2, "{clients:?}");
            assert!(
                clients.contains(&"phone".to_string()) && clients.contains(&"laptop".to_string())
            );
            assert_eq!(store.revoke_fast_client("alice", "phone").await.unwrap(), 1);
            assert!(store
                .fast_tokens("alice", "phone")
                .await
                .unwrap()
                .is_empty());
            assert_eq!(store.fast_tokens("alice", "laptop").await.unwrap().len(), 1);
            assert_eq!(store.revoke_fast_client("alice", "phone").await.unwrap(), 0);
        })
        .await;
    }
}
