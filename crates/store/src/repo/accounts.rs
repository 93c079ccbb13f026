//! Accounts: usernames, roles, states and SCRAM credentials (no plaintext passwords, ever).

use crate::pool::{with_pool, with_writer};
use crate::{now, Store, StoreError};
use sqlx::Connection;

/// A user's role (spec 4.1), stored with Prosody's role names for compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `prosody:restricted`: local users only, no invites.
    Limited,
    /// `prosody:registered`: the default.
    Normal,
    /// `prosody:admin`: the admin panel.
    Admin,
}

impl Role {
    /// The stored (Prosody) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Limited => "prosody:restricted",
            Role::Normal => "prosody:registered",
            Role::Admin => "prosody:admin",
        }
    }

    /// Parses a stored or user-given role: Prosody names and the short names `limited`, `normal`
    /// (or `user`), `admin`. The legacy `prosody:normal` means Normal (spec 1.2 step 12).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "prosody:restricted" | "limited" | "restricted" => Some(Role::Limited),
            "prosody:registered" | "prosody:normal" | "normal" | "user" | "registered" => {
                Some(Role::Normal)
            }
            "prosody:admin" | "admin" | "administrator" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Account lifecycle (spec 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// Normal.
    Active,
    /// Locked by an admin: logins fail with `account-disabled`.
    Disabled,
    /// Self-deleted, restorable until the grace period ends.
    PendingDeletion,
}

impl AccountState {
    fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Disabled => "disabled",
            AccountState::PendingDeletion => "pending_deletion",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AccountState::Active),
            "disabled" => Some(AccountState::Disabled),
            "pending_deletion" => Some(AccountState::PendingDeletion),
            _ => None,
        }
    }
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The localpart.
    pub username: String,
    /// Role.
    pub role: Role,
    /// State.
    pub state: AccountState,
    /// Display name set by the user or an admin.
    pub display_name: Option<String>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last login or logout (Unix seconds).
    pub last_active_at: Option<i64>,
    /// The invite used to register, if any.
    pub invite_id: Option<String>,
}

/// Salted, iterated SCRAM verifier for one mechanism (`SCRAM-SHA-1`, `SCRAM-SHA-256`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Mechanism name without `-PLUS`.
    pub mechanism: String,
    /// Salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// salt, iterations, stored key, server key.
type CredentialRow = (Vec<u8>, i64, Vec<u8>, Vec<u8>);
/// A credential from its row.
fn credential_from_row(mechanism: &str, row: CredentialRow) -> Result<Credential, StoreError> {
    let (salt, iterations, stored_key, server_key) = row;
    Ok(Credential {
        mechanism: mechanism.to_string(),
        salt,
        iterations: u32::try_from(iterations)
            .map_err(|_| StoreError::Corrupt(format!("iteration count {iterations}")))?,
        stored_key,
        server_key,
    })
}

/// A credential row with the account's state.
type LoginCredentialRow = (Vec<u8>, i64, Vec<u8>, Vec<u8>, String);

type AccountRow = (
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<String>,
);

fn account_from_row(r: AccountRow) -> Result<Account, StoreError> {
    Ok(Account {
        role: Role::parse(&r.1).ok_or_else(|| StoreError::Corrupt(format!("role {:?}", r.1)))?,
        state: AccountState::parse(&r.2)
            .ok_or_else(|| StoreError::Corrupt(format!("state {:?}", r.2)))?,
        username: r.0,
        display_name: r.3,
        created_at: r.4,
        last_active_at: r.5,
        invite_id: r.6,
    })
}

const ACCOUNT_COLUMNS: &str =
    "username, role, state, display_name, created_at, last_active_at, invite_id";

impl Store {
    /// Creates an account with its credentials in one transaction. Fails with `Conflict` if the
    /// username is taken.
    pub async fn create_account(
        &self,
        username: &str,
        role: Role,
        credentials: &[Credential],
        invite_id: Option<&str>,
    ) -> Result<Account, StoreError> {
        let created_at = now();
        with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO accounts (username, role, state, created_at, invite_id) VALUES ($1, $2, 'active', $3, $4) ON CONFLICT (username) DO NOTHING",
            )
            .bind(username)
            .bind(role.as_str())
            .bind(created_at)
            .bind(invite_id)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::Conflict(format!("username {username} is taken")));
            }
            for c in credentials {
                sqlx::query(
                    "INSERT INTO credentials (username, mechanism, salt, iterations, stored_key, server_key) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(username)
                .bind(&c.mechanism)
                .bind(&c.salt)
                .bind(i64::from(c.iterations))
                .bind(&c.stored_key)
                .bind(&c.server_key)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(Account {
            username: username.to_string(),
            role,
            state: AccountState::Active,
            display_name: None,
            created_at,
            last_active_at: None,
            invite_id: invite_id.map(str::to_string),
        })
    }

    /// Looks an account up.
    pub async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = $1");
        let row: Option<AccountRow> =
            with_pool!(self, p => sqlx::query_as(&sql).bind(username).fetch_optional(p).await)?;
        row.map(account_from_row).transpose()
    }

    /// All accounts, sorted by username.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY username");
        let rows: Vec<AccountRow> = with_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)?;
        rows.into_iter().map(account_from_row).collect()
    }

    /// The SCRAM credential of `username` for `mechanism`.
    pub async fn credential(
        &self,
        username: &str,
        mechanism: &str,
    ) -> Result<Option<Credential>, StoreError> {
        let row: Option<CredentialRow> = with_pool!(self, p => sqlx::query_as(
            "SELECT salt, iterations, stored_key, server_key FROM credentials WHERE username = $1 AND mechanism = $2",
        )
        .bind(username)
        .bind(mechanism)
        .fetch_optional(p)
        .await)?;
        row.map(|row| credential_from_row(mechanism, row))
            .transpose()
    }

    /// The SCRAM credential of `username` for `mechanism` with the account's state, in one
    /// query: what a login needs before and after the proof.
    pub async fn login_credential(
        &self,
        username: &str,
        mechanism: &str,
    ) -> Result<Option<(Credential, AccountState)>, StoreError> {
        let row: Option<LoginCredentialRow> = with_pool!(self, p => sqlx::query_as(
            "SELECT c.salt, c.iterations, c.stored_key, c.server_key, a.state \
             FROM credentials c JOIN accounts a ON a.username = c.username \
             WHERE c.username = $1 AND c.mechanism = $2",
        )
        .bind(username)
        .bind(mechanism)
        .fetch_optional(p)
        .await)?;
        row.map(|(salt, iterations, stored_key, server_key, state)| {
            let state = AccountState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("account state {state}")))?;
            let row = (salt, iterations, stored_key, server_key);
            Ok((credential_from_row(mechanism, row)?, state))
        })
        .transpose()
    }

    /// Replaces all credentials of `username` (password change or reset) atomically.
    pub async fn set_credentials(
        &self,
        username: &str,
        credentials: &[Credential],
    ) -> Result<(), StoreError> {
        with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            let exists: Option<(String,)> = sqlx::query_as("SELECT username FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound { what: "account" });
            }
            sqlx::query("DELETE FROM credentials WHERE username = $1").bind(username).execute(&mut *tx).await?;
            // A new password ends every FAST token (XEP-0484) handed out under the old one.
            sqlx::query("DELETE FROM fast_tokens WHERE username = $1").bind(username).execute(&mut *tx).await?;
            for c in credentials {
                sqlx::query(
                    "INSERT INTO credentials (username, mechanism, salt, iterations, stored_key, server_key) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(username)
                .bind(&c.mechanism)
                .bind(&c.salt)
                .bind(i64::from(c.iterations))
                .bind(&c.stored_key)
                .bind(&c.server_key)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Number of accounts with the admin role.
    pub async fn admin_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = with_pool!(self, p => sqlx::query_as(
            "SELECT COUNT(*) FROM accounts WHERE role = 'prosody:admin' AND state = 'active'",
        )
        .fetch_one(p)
        .await)?;
        Ok(n)
    }

    /// Records a login or logout time.
    pub async fn touch_account(&self, username: &str) -> Result<(), StoreError> {
        with_writer!(self, p => sqlx::query("UPDATE accounts SET last_active_at = $1 WHERE username = $2")
            .bind(now())
            .bind(username)
            .execute(p)
            .await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Records when accounts were last active, all in one transaction. A time older than the one
    /// already stored leaves it alone; unknown accounts are skipped.
    pub async fn record_activity(&self, seen: &[(String, i64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        with_writer!(self, p => async {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            for (username, at) in seen {
                sqlx::query(
                    "UPDATE accounts SET last_active_at = $1 \
                     WHERE username = $2 AND (last_active_at IS NULL OR last_active_at < $1)",
                )
                .bind(*at)
                .bind(username)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }.await)
    }

    /// Changes the state of an account.
    pub async fn set_account_state(
        &self,
        username: &str,
        state: AccountState,
    ) -> Result<(), StoreError> {
        let requested = (state == AccountState::PendingDeletion).then(now);
        let r = with_pool!(self, p => sqlx::query(
            "UPDATE accounts SET state = $1, deletion_requested_at = $2 WHERE username = $3",
        )
        .bind(state.as_str())
        .bind(requested)
        .bind(username)
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        if r == 0 {
            return Err(StoreError::NotFound { what: "account" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;

    fn cred(mech: &str) -> Credential {
        Credential {
            mechanism: mech.to_string(),
            salt: vec![1, 2, 3],
            iterations: 4096,
            stored_key: vec![4; 20],
            server_key: vec![5; 20],
        }
    }

    #[tokio::test]
    async fn a_login_credential_comes_with_the_account_state() {
        each_backend(|store| async move {
            store
                .create_account("carol", Role::Normal, &[cred("SCRAM-SHA-1")], None)
                .await
                .unwrap();
            assert_eq!(
                store
                    .login_credential("carol", "SCRAM-SHA-1")
                    .await
                    .unwrap(),
                Some((cred("SCRAM-SHA-1"), AccountState::Active))
            );
            assert_eq!(
                store
                    .login_credential("carol", "SCRAM-SHA-256")
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(
                store
                    .login_credential("nobody", "SCRAM-SHA-1")
                    .await
                    .unwrap(),
                None
            );
            store
                .set_account_state("carol", AccountState::Disabled)
                .await
                .unwrap();
            assert_eq!(
                store
                    .login_credential("carol", "SCRAM-SHA-1")
                    .await
                    .unwrap(),
                Some((cred("SCRAM-SHA-1"), AccountState::Disabled))
            );
        })
        .await;
    }

    #[tokio::test]
    async fn accounts_and_credentials_round_trip() {
        each_backend(|store| async move {
            let a = store
                .create_account(
                    "alice",
                    Role::Admin,
                    &[cred("SCRAM-SHA-1"), cred("SCRAM-SHA-256")],
                    None,
                )
                .await
                .unwrap();
            assert_eq!(a.role, Role::Admin);
            assert!(matches!(
                store.create_account("alice", Role::Normal, &[], None).await,
                Err(StoreError::Conflict(_))
            ));
            let got = store.account("alice").await.unwrap().unwrap();
            assert_eq!(got, a);
            assert_eq!(
                store.credential("alice", "SCRAM-SHA-256").await.unwrap(),
                Some(cred("SCRAM-SHA-256"))
            );
            assert_eq!(
                store.credential("alice", "SCRAM-SHA-512").await.unwrap(),
                None
            );
            let mut newer = cred("SCRAM-SHA-256");
            newer.iterations = 10000;
            store
                .set_credentials("alice", std::slice::from_ref(&newer))
                .await
                .unwrap();
            assert_eq!(
                store.credential("alice", "SCRAM-SHA-256").await.unwrap(),
                Some(newer)
            );
            assert_eq!(
                store.credential("alice", "SCRAM-SHA-1").await.unwrap(),
                None
            );
            assert!(matches!(
                store.set_credentials("nobody", &[]).await,
                Err(StoreError::NotFound { .. })
            ));
            assert_eq!(store.admin_count().await.unwrap(), 1);
            store
                .set_account_state("alice", AccountState::Disabled)
                .await
                .unwrap();
            assert_eq!(store.admin_count().await.unwrap(), 0);
            store.touch_account("alice").await.unwrap();
            assert!(store
                .account("alice")
                .await
                .unwrap()
                .unwrap()
                .last_active_at
                .is_some());
            let seen = |store: &Store| {
                let store = store.clone();
                async move {
                    store
                        .account("alice")
                        .await
                        .unwrap()
                        .unwrap()
                        .last_active_at
                }
            };
            // A batch sets newer times, keeps a newer stored time, skips unknown accounts.
            store
                .record_activity(&[("alice".into(), 4_000_000_000), ("nobody".into(), 5)])
                .await
                .unwrap();
            assert_eq!(seen(&store).await, Some(4_000_000_000));
            store
                .record_activity(&[("alice".into(), 3_000_000_000)])
                .await
                .unwrap();
            assert_eq!(seen(&store).await, Some(4_000_000_000));
            store.record_activity(&[]).await.unwrap();
            assert_eq!(store.accounts().await.unwrap().len(), 1);
            assert!(format!("{:?}", cred("x")).find("stored_key").is_none());
        })
        .await;
    }

    #[test]
    fn role_names() {
        for r in [Role::Limited, Role::Normal, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("prosody:normal"), Some(Role::Normal));
        assert_eq!(Role::parse("superuser"), None);
    }
}
