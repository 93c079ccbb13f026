//! Account administration (spec 4.1, 4.2): display names, roles, locking, deletion and activity
//! counts, with last-administrator protection done inside the database statement.
//!
//! The protection is a guard in the `UPDATE`/`DELETE` itself, so a check and a change can never
//! interleave: on SQLite a statement is atomic; on PostgreSQL the active admin rows are first
//! locked with `FOR UPDATE`, which serialises concurrent demotions of two different admins.

use crate::pool::with_pool;
use crate::{now, Backend, Role, Store, StoreError};
use sqlx::Connection;

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountChangeError {
    /// No such account.
    #[error("account not found")]
    NotFound,
    /// The change would leave the server without an active administrator.
    #[error("cannot remove the only administrator")]
    LastAdmin,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// True for an account that is not the last active administrator (SQL, column context).
const NOT_LAST_ADMIN: &str = "NOT (role = 'prosody:admin' AND state = 'active' AND \
     (SELECT COUNT(*) FROM accounts WHERE role = 'prosody:admin' AND state = 'active') <= 1)";

/// Locks the active admin rows on PostgreSQL (no-op SQL is never sent to SQLite).
const LOCK_ADMINS: &str =
    "SELECT username FROM accounts WHERE role = 'prosody:admin' AND state = 'active' FOR UPDATE";

impl Store {
    /// Runs `sql` (with `$1` = username and optionally `$2`) under the last-admin guard and
    /// tells apart "refused" from "no such account".
    async fn guarded_change(
        &self,
        sql: &str,
        username: &str,
        second: Option<&str>,
    ) -> Result<(), AccountChangeError> {
        let pg = self.backend() == Backend::Postgres;
        let changed: Result<u64, StoreError> = with_pool!(self, p => async {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            if pg {
                sqlx::query(LOCK_ADMINS).execute(&mut *tx).await?;
            }
            let mut q = sqlx::query(sql).bind(username);
            if let Some(s) = second {
                q = q.bind(s);
            }
            let r = q.execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(r)
        }.await);
        if changed? > 0 {
            return Ok(());
        }
        match self.account(username).await? {
            None => Err(AccountChangeError::NotFound),
            Some(_) => Err(AccountChangeError::LastAdmin),
        }
    }

    /// Sets or clears (`None`) the display name.
    pub async fn set_display_name(
        &self,
        username: &str,
        display_name: Option<&str>,
    ) -> Result<(), StoreError> {
        let r = with_pool!(self, p => sqlx::query("UPDATE accounts SET display_name = $1 WHERE username = $2")
            .bind(display_name)
            .bind(username)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        if r == 0 {
            return Err(StoreError::NotFound { what: "account" });
        }
        Ok(())
    }

    /// Changes the role; demoting the last active administrator is refused.
    pub async fn set_role(&self, username: &str, role: Role) -> Result<(), AccountChangeError> {
        if role == Role::Admin {
            let r = with_pool!(self, p => sqlx::query("UPDATE accounts SET role = $1 WHERE username = $2")
                .bind(role.as_str())
                .bind(username)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))
            .map_err(StoreError::from)?;
            return if r == 0 {
                Err(AccountChangeError::NotFound)
            } else {
                Ok(())
            };
        }
        let sql = format!("UPDATE accounts SET role = $2 WHERE username = $1 AND {NOT_LAST_ADMIN}");
        self.guarded_change(&sql, username, Some(role.as_str()))
            .await
    }

    /// Locks (disables) an account; locking the last active administrator is refused.
    pub async fn lock_account(&self, username: &str) -> Result<(), AccountChangeError> {
        let sql = format!(
            "UPDATE accounts SET state = 'disabled', deletion_requested_at = NULL WHERE username = $1 AND {NOT_LAST_ADMIN}"
        );
        self.guarded_change(&sql, username, None).await
    }

    /// Deletes an account with its credentials, circle memberships and portal sessions;
    /// deleting the last active administrator is refused.
    pub async fn delete_account(&self, username: &str) -> Result<(), AccountChangeError> {
        let pg = self.backend() == Backend::Postgres;
        let sql = format!("DELETE FROM accounts WHERE username = $1 AND {NOT_LAST_ADMIN}");
        let changed: Result<u64, StoreError> = with_pool!(self, p => async {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            if pg {
                sqlx::query(LOCK_ADMINS).execute(&mut *tx).await?;
            }
            let r = sqlx::query(&sql).bind(username).execute(&mut *tx).await?.rows_affected();
            if r > 0 {
                // The foreign keys cascade too; being explicit keeps this true without them.
                for table in [
                    "circle_members",
                    "credentials",
                    "portal_sessions",
                    "fast_tokens",
                    "push_registrations",
                ] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE username = $1"))
                        .bind(username)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(r)
        }.await);
        if changed? > 0 {
            return Ok(());
        }
        match self.account(username).await? {
            None => Err(AccountChangeError::NotFound),
            Some(_) => Err(AccountChangeError::LastAdmin),
        }
    }

    /// When the owner of `username` asked for deletion, if the account is pending deletion.
    pub async fn deletion_requested_at(&self, username: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(Option<i64>,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT deletion_requested_at FROM accounts WHERE username = $1 AND state = 'pending_deletion'",
        )
        .bind(username)
        .fetch_optional(p)
        .await)?;
        Ok(row.and_then(|(t,)| t))
    }

    /// Deletes every account whose owner asked for deletion (XEP-0077 remove) at or before
    /// `cutoff` (spec 4.2: after the grace period of `SNIKKET_RETENTION_DAYS`) and returns their
    /// names. An account restored meanwhile is no longer pending and stays; the last active
    /// administrator is never pending (an admin's self-deletion is refused while they are last).
    pub async fn purge_pending_deletions(&self, cutoff: i64) -> Result<Vec<String>, StoreError> {
        let due: Vec<(String,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT username FROM accounts WHERE state = 'pending_deletion' \
             AND deletion_requested_at IS NOT NULL AND deletion_requested_at <= $1 ORDER BY username",
        )
        .bind(cutoff)
        .fetch_all(p)
        .await)?;
        let mut deleted = Vec::with_capacity(due.len());
        for (username,) in due {
            match self.delete_account(&username).await {
                Ok(()) => deleted.push(username),
                // Deleted by an admin in between, or (never expected) the last admin: skip.
                Err(AccountChangeError::NotFound | AccountChangeError::LastAdmin) => {}
                Err(AccountChangeError::Store(e)) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Number of accounts.
    pub async fn account_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = with_pool!(self, p => sqlx::query_as("SELECT COUNT(*) FROM accounts")
            .fetch_one(p)
            .await)?;
        Ok(n)
    }

    /// Number of accounts whose last activity is at or after `since` (Unix seconds).
    pub async fn active_account_count(&self, since: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) = with_pool!(self, p => sqlx::query_as(
            "SELECT COUNT(*) FROM accounts WHERE last_active_at >= $1",
        )
        .bind(since)
        .fetch_one(p)
        .await)?;
        Ok(n)
    }

    /// Sets the last activity time explicitly (imports, tests); `touch_account` uses now.
    pub async fn set_last_active(&self, username: &str, at: i64) -> Result<(), StoreError> {
        let r = with_pool!(self, p => sqlx::query("UPDATE accounts SET last_active_at = $1 WHERE username = $2")
            .bind(at)
            .bind(username)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        if r == 0 {
            return Err(StoreError::NotFound { what: "account" });
        }
        Ok(())
    }
}

/// Seconds in a day, for callers computing activity windows.
pub const DAY_SECS: i64 = 86_400;

/// `now() - days` in Unix seconds.
pub fn days_ago(days: i64) -> i64 {
    now().saturating_sub(days.saturating_mul(DAY_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;
    use crate::AccountState;

    #[tokio::test]
    async fn last_admin_is_protected_from_demotion_lock_and_deletion() {
        each_backend(|store| async move {
            store
                .create_account("root", Role::Admin, &[], None)
                .await
                .unwrap();
            store
                .create_account("bob", Role::Normal, &[], None)
                .await
                .unwrap();
            assert!(matches!(
                store.set_role("root", Role::Normal).await,
                Err(AccountChangeError::LastAdmin)
            ));
            assert!(matches!(
                store.set_role("root", Role::Limited).await,
                Err(AccountChangeError::LastAdmin)
            ));
            assert!(matches!(
                store.lock_account("root").await,
                Err(AccountChangeError::LastAdmin)
            ));
            assert!(matches!(
                store.delete_account("root").await,
                Err(AccountChangeError::LastAdmin)
            ));
            assert_eq!(
                store.account("root").await.unwrap().unwrap().role,
                Role::Admin
            );
            assert!(matches!(
                store.set_role("ghost", Role::Normal).await,
                Err(AccountChangeError::NotFound)
            ));
            assert!(matches!(
                store.set_role("ghost", Role::Admin).await,
                Err(AccountChangeError::NotFound)
            ));
            assert!(matches!(
                store.lock_account("ghost").await,
                Err(AccountChangeError::NotFound)
            ));
            assert!(matches!(
                store.delete_account("ghost").await,
                Err(AccountChangeError::NotFound)
            ));

            // With a second admin, the first can be demoted; then the second is the last.
            store.set_role("bob", Role::Admin).await.unwrap();
            store.set_role("root", Role::Limited).await.unwrap();
            assert_eq!(
                store.account("root").await.unwrap().unwrap().role,
                Role::Limited
            );
            assert!(matches!(
                store.set_role("bob", Role::Normal).await,
                Err(AccountChangeError::LastAdmin)
            ));
            // Non-admins can be changed freely.
            store.set_role("root", Role::Normal).await.unwrap();
            store.lock_account("root").await.unwrap();
            assert_eq!(
                store.account("root").await.unwrap().unwrap().state,
                AccountState::Disabled
            );
            // A locked admin does not count as the remaining admin.
            store.set_role("root", Role::Admin).await.unwrap();
            assert!(matches!(
                store.lock_account("bob").await,
                Err(AccountChangeError::LastAdmin)
            ));
            store.delete_account("root").await.unwrap();
            assert_eq!(store.account("root").await.unwrap(), None);
        })
        .await;
    }

    #[tokio::test]
    async fn deletion_removes_memberships_credentials_and_sessions() {
        each_backend(|store| async move {
            store.ensure_default_circle("Home").await.unwrap();
            store
                .create_account("root", Role::Admin, &[], None)
                .await
                .unwrap();
            let cred = crate::Credential {
                mechanism: "SCRAM-SHA-256".into(),
                salt: vec![1],
                iterations: 4096,
                stored_key: vec![2; 32],
                server_key: vec![3; 32],
            };
            store
                .create_account("carol", Role::Normal, &[cred], None)
                .await
                .unwrap();
            store.add_circle_member("default", "carol").await.unwrap();
            let s = store.create_portal_session("carol", 60).await.unwrap();
            store.delete_account("carol").await.unwrap();
            assert!(store.circle_members("default").await.unwrap().is_empty());
            assert_eq!(
                store.credential("carol", "SCRAM-SHA-256").await.unwrap(),
                None
            );
            assert_eq!(store.portal_session(&s.token).await.unwrap(), None);
            // The name can be registered again afterwards.
            store
                .create_account("carol", Role::Normal, &[], None)
                .await
                .unwrap();
            assert!(store.circle_members("default").await.unwrap().is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn display_names_states_and_activity_counts() {
        each_backend(|store| async move {
            for u in ["a", "b", "c"] {
                store
                    .create_account(u, Role::Normal, &[], None)
                    .await
                    .unwrap();
            }
            store.set_display_name("a", Some("Ann")).await.unwrap();
            assert_eq!(
                store.account("a").await.unwrap().unwrap().display_name,
                Some("Ann".to_string())
            );
            store.set_display_name("a", None).await.unwrap();
            assert_eq!(
                store.account("a").await.unwrap().unwrap().display_name,
                None
            );
            assert!(matches!(
                store.set_display_name("zz", Some("x")).await,
                Err(StoreError::NotFound { .. })
            ));

            assert_eq!(store.deletion_requested_at("b").await.unwrap(), None);
            store
                .set_account_state("b", AccountState::PendingDeletion)
                .await
                .unwrap();
            assert!(store.deletion_requested_at("b").await.unwrap().is_some());
            store
                .set_account_state("b", AccountState::Active)
                .await
                .unwrap();
            assert_eq!(store.deletion_requested_at("b").await.unwrap(), None);

            // The grace period: nothing is due before it ends; a restored account never is.
            store
                .set_account_state("c", AccountState::PendingDeletion)
                .await
                .unwrap();
            let asked = store.deletion_requested_at("c").await.unwrap().unwrap();
            assert!(store
                .purge_pending_deletions(asked - 1)
                .await
                .unwrap()
                .is_empty());
            assert!(store.account("c").await.unwrap().is_some());
            assert_eq!(
                store.purge_pending_deletions(asked).await.unwrap(),
                vec!["c".to_string()]
            );
            assert!(store.account("c").await.unwrap().is_none());
            assert!(store
                .purge_pending_deletions(now() + 86_400)
                .await
                .unwrap()
                .is_empty());
            store
                .create_account("c", Role::Normal, &[], None)
                .await
                .unwrap();

            assert_eq!(store.account_count().await.unwrap(), 3);
            assert_eq!(store.active_account_count(days_ago(30)).await.unwrap(), 0);
            store.set_last_active("a", now()).await.unwrap();
            store.set_last_active("b", days_ago(3)).await.unwrap();
            store.set_last_active("c", days_ago(20)).await.unwrap();
            assert_eq!(store.active_account_count(days_ago(1)).await.unwrap(), 1);
            assert_eq!(store.active_account_count(days_ago(7)).await.unwrap(), 2);
            assert_eq!(store.active_account_count(days_ago(30)).await.unwrap(), 3);
            assert!(matches!(
                store.set_last_active("zz", 1).await,
                Err(StoreError::NotFound { .. })
            ));
        })
        .await;
    }
}
