//! Portal sessions of the admin gRPC API: random bearer tokens of which only a hash is stored.
//!
//! A token is 32 random bytes in base64url (43 characters). The table keeps its SHA-256, so a
//! copy of the database does not let anyone act as a signed-in user. Lookup by hash is not
//! timing-sensitive: an attacker cannot steer the hash of a guessed token.

use crate::pool::with_pool;
use crate::{now, Store, StoreError};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// One signed-in portal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// Whose session.
    pub username: String,
    /// Creation, Unix seconds.
    pub created_at: i64,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// A freshly created session and the only copy of its token.
pub struct NewSession {
    /// The bearer token to hand to the client; never stored or logged.
    pub token: String,
    /// The session.
    pub session: PortalSession,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("token", &"***")
            .field("session", &self.session)
            .finish()
    }
}

fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl Store {
    /// Opens a session for `username` valid for `ttl_secs`. Fails with `NotFound` if the
    /// account does not exist.
    pub async fn create_portal_session(
        &self,
        username: &str,
        ttl_secs: i64,
    ) -> Result<NewSession, StoreError> {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let created_at = now();
        let expires_at = created_at.saturating_add(ttl_secs);
        let inserted = with_pool!(self, p => sqlx::query(
            "INSERT INTO portal_sessions (session_hash, username, created_at, expires_at) \
             SELECT $1, username, $3, $4 FROM accounts WHERE username = $2",
        )
        .bind(token_hash(&token))
        .bind(username)
        .bind(created_at)
        .bind(expires_at)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if inserted == 0 {
            return Err(StoreError::NotFound { what: "account" });
        }
        Ok(NewSession {
            token,
            session: PortalSession {
                username: username.to_string(),
                created_at,
                expires_at,
            },
        })
    }

    /// The unexpired session of `token`, if any.
    pub async fn portal_session(&self, token: &str) -> Result<Option<PortalSession>, StoreError> {
        let row: Option<(String, i64, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT username, created_at, expires_at FROM portal_sessions WHERE session_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash(token))
        .bind(now())
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(username, created_at, expires_at)| PortalSession {
            username,
            created_at,
            expires_at,
        }))
    }

    /// Revokes the session of `token`. Returns whether it existed.
    pub async fn revoke_portal_session(&self, token: &str) -> Result<bool, StoreError> {
        let r = with_pool!(self, p => sqlx::query("DELETE FROM portal_sessions WHERE session_hash = $1")
            .bind(token_hash(token))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(r > 0)
    }

    /// Revokes every session of `username` except the one of `keep` (if given); returns how many.
    pub async fn revoke_portal_sessions_of(
        &self,
        username: &str,
        keep: Option<&str>,
    ) -> Result<u64, StoreError> {
        let keep_hash = keep.map(token_hash).unwrap_or_default();
        let r = with_pool!(self, p => sqlx::query(
            "DELETE FROM portal_sessions WHERE username = $1 AND session_hash <> $2",
        )
        .bind(username)
        .bind(keep_hash)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(r)
    }

    /// Deletes expired sessions; returns how many.
    pub async fn cleanup_portal_sessions(&self) -> Result<u64, StoreError> {
        let r = with_pool!(self, p => sqlx::query("DELETE FROM portal_sessions WHERE expires_at <= $1")
            .bind(now())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;
    use crate::Role;

    #[tokio::test]
    async fn sessions_are_created_checked_revoked_and_expire() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Admin, &[], None)
                .await
                .unwrap();
            assert!(matches!(
                store.create_portal_session("nobody", 60).await,
                Err(StoreError::NotFound { .. })
            ));
            let a = store.create_portal_session("alice", 86_400).await.unwrap();
            let b = store.create_portal_session("alice", 86_400).await.unwrap();
            assert_eq!(a.token.len(), 43);
            assert_ne!(a.token, b.token);
            assert!(!format!("{a:?}").contains(&a.token));
            let got = store.portal_session(&a.token).await.unwrap().unwrap();
            assert_eq!(got, a.session);
            assert_eq!(got.expires_at - got.created_at, 86_400);
            assert_eq!(store.portal_session("guess").await.unwrap(), None);

            // Expired sessions are refused and cleaned up.
            let old = store.create_portal_session("alice", -1).await.unwrap();
            assert_eq!(store.portal_session(&old.token).await.unwrap(), None);
            assert_eq!(store.cleanup_portal_sessions().await.unwrap(), 1);

            // Revoking one leaves the other.
            assert!(store.revoke_portal_session(&a.token).await.unwrap());
            assert!(!store.revoke_portal_session(&a.token).await.unwrap());
            assert_eq!(store.portal_session(&a.token).await.unwrap(), None);
            assert!(store.portal_session(&b.token).await.unwrap().is_some());

            // Revoking all but one.
            let c = store.create_portal_session("alice", 60).await.unwrap();
            assert_eq!(
                store
                    .revoke_portal_sessions_of("alice", Some(&c.token))
                    .await
                    .unwrap(),
                1
            );
            assert!(store.portal_session(&b.token).await.unwrap().is_none());
            assert!(store.portal_session(&c.token).await.unwrap().is_some());
            assert_eq!(
                store
                    .revoke_portal_sessions_of("alice", None)
                    .await
                    .unwrap(),
                1
            );
            assert!(store.portal_session(&c.token).await.unwrap().is_none());
        })
        .await;
    }
}
