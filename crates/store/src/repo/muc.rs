//! Group chats people create on groups.DOMAIN (XEP-0045): each room's configuration and the
//! affiliations (owner, admin, member, outcast) of bare JIDs. Occupants are not stored: they are
//! live sessions, kept by the server.

use crate::pool::with_pool;
use crate::{Store, StoreError};
use sqlx::Connection;

/// A room's stored configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MucRoom {
    /// `id@groups.DOMAIN`.
    pub room_jid: String,
    /// Natural-language name (may be empty).
    pub name: String,
    /// Description (may be empty).
    pub description: String,
    /// Current subject (may be empty).
    pub subject: String,
    /// Kept when the last occupant leaves.
    pub persistent: bool,
    /// Listed in the service's disco#items.
    pub public: bool,
    /// Only affiliated users may join.
    pub members_only: bool,
    /// Occupants' real JIDs are shown to everyone (else to moderators only).
    pub non_anonymous: bool,
    /// Members may invite others (and so make them members).
    pub allow_invites: bool,
    /// Participants may change the subject.
    pub change_subject: bool,
    /// Unix seconds.
    pub created_at: i64,
}

type Row = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

fn from_row(r: Row) -> MucRoom {
    MucRoom {
        room_jid: r.0,
        name: r.1,
        description: r.2,
        subject: r.3,
        persistent: r.4 != 0,
        public: r.5 != 0,
        members_only: r.6 != 0,
        non_anonymous: r.7 != 0,
        allow_invites: r.8 != 0,
        change_subject: r.9 != 0,
        created_at: r.10,
    }
}

const COLUMNS: &str = "room_jid, name, description, subject, persistent, public, members_only, \
                       non_anonymous, allow_invites, change_subject, created_at";

impl Store {
    /// The room `room_jid`, if it exists.
    pub async fn muc_room(&self, room_jid: &str) -> Result<Option<MucRoom>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM muc_rooms WHERE room_jid = $1");
        let row: Option<Row> = with_pool!(self, p => sqlx::query_as(&sql)
            .bind(room_jid)
            .fetch_optional(p)
            .await)?;
        Ok(row.map(from_row))
    }

    /// Creates `room` with `owner` (a bare JID) as its owner; false if it already exists.
    pub async fn muc_create_room(&self, room: &MucRoom, owner: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            let n = sqlx::query(
                "INSERT INTO muc_rooms (room_jid, name, description, subject, persistent, public, \
                 members_only, non_anonymous, allow_invites, change_subject, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (room_jid) DO NOTHING",
            )
            .bind(&room.room_jid)
            .bind(&room.name)
            .bind(&room.description)
            .bind(&room.subject)
            .bind(i64::from(room.persistent))
            .bind(i64::from(room.public))
            .bind(i64::from(room.members_only))
            .bind(i64::from(room.non_anonymous))
            .bind(i64::from(room.allow_invites))
            .bind(i64::from(room.change_subject))
            .bind(room.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO muc_affiliations (room_jid, jid, affiliation) VALUES ($1, $2, 'owner')",
            )
            .bind(&room.room_jid)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Stores a room's changed configuration or subject.
    pub async fn muc_update_room(&self, room: &MucRoom) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query(
            "UPDATE muc_rooms SET name = $2, description = $3, subject = $4, persistent = $5, \
             public = $6, members_only = $7, non_anonymous = $8, allow_invites = $9, \
             change_subject = $10 WHERE room_jid = $1",
        )
        .bind(&room.room_jid)
        .bind(&room.name)
        .bind(&room.description)
        .bind(&room.subject)
        .bind(i64::from(room.persistent))
        .bind(i64::from(room.public))
        .bind(i64::from(room.members_only))
        .bind(i64::from(room.non_anonymous))
        .bind(i64::from(room.allow_invites))
        .bind(i64::from(room.change_subject))
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a room with its affiliations; false if there was none.
    pub async fn muc_delete_room(&self, room_jid: &str) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query("DELETE FROM muc_affiliations WHERE room_jid = $1")
                .bind(room_jid)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query("DELETE FROM muc_rooms WHERE room_jid = $1")
                .bind(room_jid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            n
        });
        Ok(n == 1)
    }

    /// A room's affiliations as (bare JID, affiliation), ordered by JID.
    pub async fn muc_affiliations(
        &self,
        room_jid: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(String, String)> = with_pool!(self, p => sqlx::query_as(
            "SELECT jid, affiliation FROM muc_affiliations WHERE room_jid = $1 ORDER BY jid",
        )
        .bind(room_jid)
        .fetch_all(p)
        .await)?;
        Ok(rows)
    }

    /// Sets (or with `None` removes) the affiliation of `jid` in a room.
    pub async fn muc_set_affiliation(
        &self,
        room_jid: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => match affiliation {
            Some(a) => sqlx::query(
                "INSERT INTO muc_affiliations (room_jid, jid, affiliation) VALUES ($1, $2, $3) \
                 ON CONFLICT (room_jid, jid) DO UPDATE SET affiliation = excluded.affiliation",
            )
            .bind(room_jid)
            .bind(jid)
            .bind(a)
            .execute(p)
            .await
            .map(|_| ()),
            None => sqlx::query("DELETE FROM muc_affiliations WHERE room_jid = $1 AND jid = $2")
                .bind(room_jid)
                .bind(jid)
                .execute(p)
                .await
                .map(|_| ()),
        })?;
        Ok(())
    }

    /// Public rooms as (room JID, name), for the service's disco#items.
    pub async fn muc_public_rooms(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(String, String)> = with_pool!(self, p => sqlx::query_as(
            "SELECT room_jid, name FROM muc_rooms WHERE public = 1 ORDER BY room_jid LIMIT 1000",
        )
        .fetch_all(p)
        .await)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;

    fn room(jid: &str) -> MucRoom {
        MucRoom {
            room_jid: jid.into(),
            name: String::new(),
            description: String::new(),
            subject: String::new(),
            persistent: true,
            public: false,
            members_only: true,
            non_anonymous: true,
            allow_invites: true,
            change_subject: false,
            created_at: 1000,
        }
    }

    #[tokio::test]
    async fn rooms_are_created_once_with_their_owner_and_changed() {
        each_backend(|s| async move {
            let r = room("r@groups.example.com");
            assert!(s.muc_create_room(&r, "ann@example.com").await.unwrap());
            assert!(!s.muc_create_room(&r, "bob@example.com").await.unwrap());
            assert_eq!(
                s.muc_affiliations(&r.room_jid).await.unwrap(),
                vec![("ann@example.com".to_string(), "owner".to_string())]
            );
            let mut changed = r.clone();
            changed.name = "Family".into();
            changed.public = true;
            changed.subject = "Holidays".into();
            s.muc_update_room(&changed).await.unwrap();
            assert_eq!(s.muc_room(&r.room_jid).await.unwrap(), Some(changed));
            assert_eq!(
                s.muc_public_rooms().await.unwrap(),
                vec![(r.room_jid.clone(), "Family".to_string())]
            );
            assert_eq!(s.muc_room("nope@groups.example.com").await.unwrap(), None);
        })
        .await;
    }

    #[tokio::test]
    async fn affiliations_are_set_changed_and_removed_and_go_with_the_room() {
        each_backend(|s| async move {
            let r = room("r@groups.example.com");
            s.muc_create_room(&r, "ann@example.com").await.unwrap();
            s.muc_set_affiliation(&r.room_jid, "bob@example.com", Some("member"))
                .await
                .unwrap();
            s.muc_set_affiliation(&r.room_jid, "cy@example.com", Some("member"))
                .await
                .unwrap();
            s.muc_set_affiliation(&r.room_jid, "bob@example.com", Some("admin"))
                .await
                .unwrap();
            s.muc_set_affiliation(&r.room_jid, "cy@example.com", None)
                .await
                .unwrap();
            assert_eq!(
                s.muc_affiliations(&r.room_jid).await.unwrap(),
                vec![
                    ("ann@example.com".to_string(), "owner".to_string()),
                    ("bob@example.com".to_string(), "admin".to_string())
                ]
            );
            assert!(s.muc_delete_room(&r.room_jid).await.unwrap());
            assert!(!s.muc_delete_room(&r.room_jid).await.unwrap());
            assert!(s.muc_affiliations(&r.room_jid).await.unwrap().is_empty());
        })
        .await;
    }
}
