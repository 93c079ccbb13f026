//! Circles: named groups whose members see each other (spec 4.3).

use crate::pool::with_pool;
use crate::{now, Store, StoreError};
use base64::Engine;
use rand::RngCore;

/// Id of the circle every server has from its first start.
pub const DEFAULT_CIRCLE_ID: &str = "default";

/// One circle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circle {
    /// Random 12-character id (or `default`).
    pub circle_id: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: i64,
}

/// A group chat attached to a circle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircleChat {
    /// Room address on groups.DOMAIN.
    pub room_jid: String,
    /// Chat name.
    pub name: String,
}

fn new_circle_id() -> String {
    let mut b = [0u8; 9];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Store {
    /// Creates the `default` circle named `name` unless it exists. Returns whether it was created.
    pub async fn ensure_default_circle(&self, name: &str) -> Result<bool, StoreError> {
        let r = with_pool!(self, p => sqlx::query(
            "INSERT INTO circles (circle_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (circle_id) DO NOTHING",
        )
        .bind(DEFAULT_CIRCLE_ID)
        .bind(name)
        .bind(now())
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        Ok(r == 1)
    }

    /// Creates a circle with a fresh random id.
    pub async fn create_circle(&self, name: &str) -> Result<Circle, StoreError> {
        let circle = Circle {
            circle_id: new_circle_id(),
            name: name.to_string(),
            created_at: now(),
        };
        with_pool!(self, p => sqlx::query("INSERT INTO circles (circle_id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&circle.circle_id)
            .bind(&circle.name)
            .bind(circle.created_at)
            .execute(p)
            .await.map(|r| r.rows_affected()))?;
        Ok(circle)
    }

    /// Looks a circle up by id.
    pub async fn circle(&self, circle_id: &str) -> Result<Option<Circle>, StoreError> {
        let row: Option<(String, String, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT circle_id, name, created_at FROM circles WHERE circle_id = $1",
        )
        .bind(circle_id)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(circle_id, name, created_at)| Circle {
            circle_id,
            name,
            created_at,
        }))
    }

    /// Finds a circle by id, or else by exact name (what an operator types on the command line).
    pub async fn find_circle(&self, id_or_name: &str) -> Result<Option<Circle>, StoreError> {
        if let Some(c) = self.circle(id_or_name).await? {
            return Ok(Some(c));
        }
        let rows: Vec<(String, String, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT circle_id, name, created_at FROM circles WHERE name = $1 ORDER BY created_at",
        )
        .bind(id_or_name)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .next()
            .map(|(circle_id, name, created_at)| Circle {
                circle_id,
                name,
                created_at,
            }))
    }

    /// All circles, oldest first.
    pub async fn circles(&self) -> Result<Vec<Circle>, StoreError> {
        let rows: Vec<(String, String, i64)> = with_pool!(self, p => sqlx::query_as(
            "SELECT circle_id, name, created_at FROM circles ORDER BY created_at, circle_id",
        )
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(circle_id, name, created_at)| Circle {
                circle_id,
                name,
                created_at,
            })
            .collect())
    }

    /// Adds `username` to a circle (idempotent).
    pub async fn add_circle_member(
        &self,
        circle_id: &str,
        username: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query(
            "INSERT INTO circle_members (circle_id, username, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(circle_id)
        .bind(username)
        .bind(now())
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Members of a circle, sorted.
    pub async fn circle_members(&self, circle_id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT username FROM circle_members WHERE circle_id = $1 ORDER BY username",
        )
        .bind(circle_id)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;
    use crate::Role;

    #[tokio::test]
    async fn default_circle_and_membership() {
        each_backend(|store| async move {
            assert!(store.ensure_default_circle("Family").await.unwrap());
            assert!(!store.ensure_default_circle("Other").await.unwrap());
            assert_eq!(
                store.circle(DEFAULT_CIRCLE_ID).await.unwrap().unwrap().name,
                "Family"
            );
            let c = store.create_circle("Friends").await.unwrap();
            assert_eq!(c.circle_id.len(), 12);
            assert_eq!(
                store
                    .find_circle("Friends")
                    .await
                    .unwrap()
                    .unwrap()
                    .circle_id,
                c.circle_id
            );
            assert_eq!(
                store.find_circle(&c.circle_id).await.unwrap(),
                Some(c.clone())
            );
            assert_eq!(store.find_circle("Nope").await.unwrap(), None);
            assert_eq!(store.circles().await.unwrap().len(), 2);
            store
                .create_account("bob", Role::Normal, &[], None)
                .await
                .unwrap();
            store.add_circle_member(&c.circle_id, "bob").await.unwrap();
            store.add_circle_member(&c.circle_id, "bob").await.unwrap();
            assert_eq!(
                store.circle_members(&c.circle_id).await.unwrap(),
                vec!["bob".to_string()]
            );
        })
        .await;
    }
}
