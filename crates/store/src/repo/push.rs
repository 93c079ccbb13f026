//! Push registrations (XEP-0357): per account, the push services (JID and node) its clients
//! enabled, with the publish-options each gave. They outlive sessions, so messages that arrive
//! while a phone is offline still wake it; a client's newest registrations win when an account
//! has too many.

use crate::pool::{with_pool, with_writer};
use crate::{now, Store, StoreError};
use sqlx::Connection;

/// One stored registration. (`Debug` leaves the encryption key out.)
#[derive(Clone, PartialEq, Eq)]
pub struct PushRegistration {
    /// The push service's JID (the app server).
    pub service: String,
    /// The node at the service that names the device.
    pub node: String,
    /// The client's publish-options data form, serialized; empty when it gave none.
    pub options: String,
    /// The resource of the session that enabled it.
    pub client_id: String,
    /// When it was enabled, Unix seconds.
    pub created_at: i64,
    /// The device's AES-128-GCM key (base64) for encrypted notifications, if it gave one.
    pub encrypt_key: Option<String>,
    /// The device's notification filters as it sent them (serialized XML), or empty.
    pub filters: String,
}

impl std::fmt::Debug for PushRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRegistration")
            .field("service", &self.service)
            .field("node", &self.node)
            .field("client_id", &self.client_id)
            .field("created_at", &self.created_at)
            .field("encrypted", &self.encrypt_key.is_some())
            .finish_non_exhaustive()
    }
}

type Row = (String, String, String, String, i64, Option<String>, String);

fn from_row(
    (service, node, options, client_id, created_at, encrypt_key, filters): Row,
) -> PushRegistration {
    PushRegistration {
        service,
        node,
        options,
        client_id,
        created_at,
        encrypt_key,
        filters,
    }
}

impl Store {
    /// Stores (or refreshes) a registration, then keeps only the `max` newest of the account.
    pub async fn push_enable(
        &self,
        username: &str,
        reg: &PushRegistration,
        max: usize,
    ) -> Result<(), StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        with_writer!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query(
                "INSERT INTO push_registrations \
                 (username, service, node, options, client_id, created_at, encrypt_key, filters) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (username, service, node) DO UPDATE SET \
                 options = excluded.options, client_id = excluded.client_id, created_at = excluded.created_at, \
                 encrypt_key = excluded.encrypt_key, filters = excluded.filters",
            )
            .bind(username)
            .bind(&reg.service)
            .bind(&reg.node)
            .bind(&reg.options)
            .bind(&reg.client_id)
            .bind(reg.created_at)
            .bind(&reg.encrypt_key)
            .bind(&reg.filters)
            .execute(&mut *tx)
            .await?;
            // Ties on created_at are broken by service and node, so the result is deterministic.
            sqlx::query(
                "DELETE FROM push_registrations WHERE username = $1 AND (service, node) NOT IN \
                 (SELECT service, node FROM push_registrations WHERE username = $1 \
                  ORDER BY created_at DESC, service, node LIMIT $2)",
            )
            .bind(username)
            .bind(max)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes the registrations of `username` at `service` (all its nodes when `node` is
    /// `None`); returns how many there were.
    pub async fn push_disable(
        &self,
        username: &str,
        service: &str,
        node: Option<&str>,
    ) -> Result<u64, StoreError> {
        let n = with_writer!(self, p => match node {
            Some(node) => sqlx::query(
                "DELETE FROM push_registrations WHERE username = $1 AND service = $2 AND node = $3",
            )
            .bind(username)
            .bind(service)
            .bind(node)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
            None => sqlx::query("DELETE FROM push_registrations WHERE username = $1 AND service = $2")
                .bind(username)
                .bind(service)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        })?;
        Ok(n)
    }

    /// The registrations of `username`, newest first.
    pub async fn push_registrations(
        &self,
        username: &str,
    ) -> Result<Vec<PushRegistration>, StoreError> {
        let rows: Vec<Row> = with_pool!(self, p => sqlx::query_as(
            "SELECT service, node, options, client_id, created_at, encrypt_key, filters FROM push_registrations \
             WHERE username = $1 ORDER BY created_at DESC, service, node",
        )
        .bind(username)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(from_row).collect())
    }
}

/// A registration made now.
pub fn new_registration(
    service: &str,
    node: &str,
    options: &str,
    client_id: &str,
) -> PushRegistration {
    PushRegistration {
        service: service.to_string(),
        node: node.to_string(),
        options: options.to_string(),
        client_id: client_id.to_string(),
        created_at: now(),
        encrypt_key: None,
        filters: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;
    use crate::Role;

    fn reg(node: &str, created_at: i64) -> PushRegistration {
        PushRegistration {
            service: "push.example.net".into(),
            node: node.into(),
            options: String::new(),
            client_id: "phone".into(),
            created_at,
            encrypt_key: (node == "n6").then(|| "AAECAwQFBgcICQoLDA0ODw==".into()),
            filters: if node == "n6" {
                "<f/>".into()
            } else {
                String::new()
            },
        }
    }

    #[tokio::test]
    async fn registrations_are_capped_refreshed_and_disabled() {
        each_backend(|store| async move {
            for u in ["alice", "bob"] {
                store
                    .create_account(u, Role::Normal, &[], None)
                    .await
                    .unwrap();
            }
            for i in 0..7 {
                store
                    .push_enable("alice", &reg(&format!("n{i}"), 100 + i), 5)
                    .await
                    .unwrap();
            }
            store.push_enable("bob", &reg("b", 1), 5).await.unwrap();
            let nodes: Vec<String> = store
                .push_registrations("alice")
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.node)
                .collect();
            assert_eq!(
                nodes,
                ["n6", "n5", "n4", "n3", "n2"],
                "the five newest are kept"
            );
            let newest = &store.push_registrations("alice").await.unwrap()[0];
            assert_eq!(
                newest.encrypt_key.as_deref(),
                Some("AAECAwQFBgcICQoLDA0ODw==")
            );
            assert_eq!(newest.filters, "<f/>");
            assert!(!format!("{newest:?}").contains("AAECAw"), "key in Debug");

            // Enabling again refreshes the entry instead of adding one.
            let mut again = reg("n2", 200);
            again.options = "<x xmlns='jabber:x:data' type='submit'/>".into();
            store.push_enable("alice", &again, 5).await.unwrap();
            let all = store.push_registrations("alice").await.unwrap();
            assert_eq!(all.len(), 5);
            assert_eq!(all[0], again);

            assert_eq!(
                store
                    .push_disable("alice", "push.example.net", Some("n3"))
                    .await
                    .unwrap(),
                1
            );
            assert_eq!(
                store
                    .push_disable("alice", "push.example.net", Some("n3"))
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                store
                    .push_disable("alice", "other.example", None)
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                store
                    .push_disable("alice", "push.example.net", None)
                    .await
                    .unwrap(),
                4
            );
            assert!(store.push_registrations("alice").await.unwrap().is_empty());
            assert_eq!(
                store.push_registrations("bob").await.unwrap().len(),
                1,
                "other accounts untouched"
            );

            store.delete_account("bob").await.unwrap();
            assert!(store.push_registrations("bob").await.unwrap().is_empty());
        })
        .await;
    }
}
