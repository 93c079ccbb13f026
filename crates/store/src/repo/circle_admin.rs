//! Circle administration (spec 4.3): rename, delete, member removal, chat list, memberships.
//!
//! Chats are only stored here; creating and mirroring the rooms is the group-chat code's job.
//! Deleting a circle never touches accounts.

use crate::pool::with_pool;
use crate::{CircleChat, Store, StoreError};
use sqlx::Connection;

impl Store {
    /// Renames a circle. Returns whether it exists.
    pub async fn rename_circle(&self, circle_id: &str, name: &str) -> Result<bool, StoreError> {
        let r = with_pool!(self, p => sqlx::query("UPDATE circles SET name = $1 WHERE circle_id = $2")
            .bind(name)
            .bind(circle_id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(r > 0)
    }

    /// Deletes a circle with its memberships and chats; the accounts stay. Returns whether it
    /// existed.
    pub async fn delete_circle(&self, circle_id: &str) -> Result<bool, StoreError> {
        let r = with_pool!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            for table in ["circle_members", "circle_chats"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE circle_id = $1"))
                    .bind(circle_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let r = sqlx::query("DELETE FROM circles WHERE circle_id = $1")
                .bind(circle_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            r
        });
        Ok(r > 0)
    }

    /// Removes `username` from a circle. Returns whether they were a member.
    pub async fn remove_circle_member(
        &self,
        circle_id: &str,
        username: &str,
    ) -> Result<bool, StoreError> {
        let r = with_pool!(self, p => sqlx::query("DELETE FROM circle_members WHERE circle_id = $1 AND username = $2")
            .bind(circle_id)
            .bind(username)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(r > 0)
    }

    /// Ids of the circles `username` is in, sorted.
    pub async fn circles_of(&self, username: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT circle_id FROM circle_members WHERE username = $1 ORDER BY circle_id",
        )
        .bind(username)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// The circle id and the chat name of a circle group chat, by its room address.
    pub async fn chat_circle(
        &self,
        room_jid: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(String, String)> = with_pool!(self, p => sqlx::query_as(
            "SELECT circle_id, name FROM circle_chats WHERE room_jid = $1 ORDER BY circle_id LIMIT 1",
        )
        .bind(room_jid)
        .fetch_optional(p)
        .await)?;
        Ok(row)
    }

    /// Attaches a chat to a circle. Fails with `NotFound` for an unknown circle and `Conflict`
    /// if the room is already attached.
    pub async fn add_circle_chat(
        &self,
        circle_id: &str,
        room_jid: &str,
        name: &str,
    ) -> Result<CircleChat, StoreError> {
        let r = with_pool!(self, p => sqlx::query(
            "INSERT INTO circle_chats (circle_id, room_jid, name) \
             SELECT circle_id, $2, $3 FROM circles WHERE circle_id = $1 \
             ON CONFLICT (circle_id, room_jid) DO NOTHING",
        )
        .bind(circle_id)
        .bind(room_jid)
        .bind(name)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if r == 0 {
            return match self.circle(circle_id).await? {
                None => Err(StoreError::NotFound { what: "circle" }),
                Some(_) => Err(StoreError::Conflict(format!(
                    "room {room_jid} is already a chat of this circle"
                ))),
            };
        }
        Ok(CircleChat {
            room_jid: room_jid.to_string(),
            name: name.to_string(),
        })
    }

    /// Detaches a chat. Returns whether it was attached.
    pub async fn remove_circle_chat(
        &self,
        circle_id: &str,
        room_jid: &str,
    ) -> Result<bool, StoreError> {
        let r = with_pool!(self, p => sqlx::query("DELETE FROM circle_chats WHERE circle_id = $1 AND room_jid = $2")
            .bind(circle_id)
            .bind(room_jid)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(r > 0)
    }

    /// Chats of a circle, sorted by name.
    pub async fn circle_chats(&self, circle_id: &str) -> Result<Vec<CircleChat>, StoreError> {
        let rows: Vec<(String, String)> = with_pool!(self, p => sqlx::query_as(
            "SELECT room_jid, name FROM circle_chats WHERE circle_id = $1 ORDER BY name, room_jid",
        )
        .bind(circle_id)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(room_jid, name)| CircleChat { room_jid, name })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests_support::each_backend;
    use crate::{Role, StoreError, DEFAULT_CIRCLE_ID};

    #[tokio::test]
    async fn circles_are_renamed_emptied_and_deleted_without_touching_users() {
        each_backend(|store| async move {
            store.ensure_default_circle("Home").await.unwrap();
            let c = store.create_circle("Friends").await.unwrap();
            for u in ["ann", "bob"] {
                store
                    .create_account(u, Role::Normal, &[], None)
                    .await
                    .unwrap();
                store.add_circle_member(&c.circle_id, u).await.unwrap();
            }
            store
                .add_circle_member(DEFAULT_CIRCLE_ID, "ann")
                .await
                .unwrap();
            assert_eq!(store.circles_of("ann").await.unwrap(), {
                let mut v = vec![c.circle_id.clone(), DEFAULT_CIRCLE_ID.to_string()];
                v.sort();
                v
            });

            assert!(store.rename_circle(&c.circle_id, "Pals").await.unwrap());
            assert_eq!(
                store.circle(&c.circle_id).await.unwrap().unwrap().name,
                "Pals"
            );
            assert!(!store.rename_circle("nope", "x").await.unwrap());

            assert!(store
                .remove_circle_member(&c.circle_id, "bob")
                .await
                .unwrap());
            assert!(!store
                .remove_circle_member(&c.circle_id, "bob")
                .await
                .unwrap());
            assert_eq!(
                store.circle_members(&c.circle_id).await.unwrap(),
                vec!["ann".to_string()]
            );

            let chat = store
                .add_circle_chat(&c.circle_id, "r1@groups.example.com", "Chat")
                .await
                .unwrap();
            assert_eq!(chat.name, "Chat");
            assert!(matches!(
                store
                    .add_circle_chat(&c.circle_id, "r1@groups.example.com", "Again")
                    .await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                store
                    .add_circle_chat("nope", "r2@groups.example.com", "X")
                    .await,
                Err(StoreError::NotFound { what: "circle" })
            ));
            store
                .add_circle_chat(&c.circle_id, "r0@groups.example.com", "Another")
                .await
                .unwrap();
            let chats = store.circle_chats(&c.circle_id).await.unwrap();
            assert_eq!(chats.len(), 2);
            assert_eq!(chats[0].name, "Another");
            assert!(store
                .remove_circle_chat(&c.circle_id, "r0@groups.example.com")
                .await
                .unwrap());
            assert!(!store
                .remove_circle_chat(&c.circle_id, "r0@groups.example.com")
                .await
                .unwrap());
            assert_eq!(store.circle_chats(&c.circle_id).await.unwrap(), vec![chat]);
            assert_eq!(
                store.chat_circle("r1@groups.example.com").await.unwrap(),
                Some((c.circle_id.clone(), "Chat".to_string()))
            );
            assert_eq!(
                store.chat_circle("r0@groups.example.com").await.unwrap(),
                None
            );

            assert!(store.delete_circle(&c.circle_id).await.unwrap());
            assert!(!store.delete_circle(&c.circle_id).await.unwrap());
            assert_eq!(store.circle(&c.circle_id).await.unwrap(), None);
            assert!(store.circle_chats(&c.circle_id).await.unwrap().is_empty());
            assert!(store.circle_members(&c.circle_id).await.unwrap().is_empty());
            // Users stay, and keep their other circles.
            assert!(store.account("ann").await.unwrap().is_some());
            assert!(store.account("bob").await.unwrap().is_some());
            assert_eq!(
                store.circles_of("ann").await.unwrap(),
                vec![DEFAULT_CIRCLE_ID.to_string()]
            );
        })
        .await;
    }
}
