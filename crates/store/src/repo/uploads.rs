//! File sharing (XEP-0363): the slots handed out on share.DOMAIN. A slot is reserved when a client
//! asks for it (quotas are checked then, in the same transaction), completed when its file is
//! fully on disk, and removed when it expires. The files themselves are the server's business.

use crate::pool::with_pool;
use crate::{now, Store, StoreError};
use sqlx::Connection;

/// One upload slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The slot id: the first path segment of its URL.
    pub slot: String,
    /// Who asked for it (local username).
    pub username: String,
    /// The file name the client announced.
    pub filename: String,
    /// The exact size the PUT must have, in bytes.
    pub size: u64,
    /// The content type the client announced (served back on GET).
    pub content_type: String,
    /// SHA-256 (hex) of the PUT secret.
    pub token_hash: String,
    /// When the slot was handed out, Unix seconds.
    pub created_at: i64,
    /// When the file was complete on disk, if it is.
    pub completed_at: Option<i64>,
}

/// Why a slot was not reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// The user's slots of the last 24 hours plus this one exceed the daily quota.
    Daily,
    /// All stored files plus this one exceed the server's storage quota.
    Global,
}

type Row = (
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<i64>,
);

fn from_row(
    (slot, username, filename, size, content_type, token_hash, created_at, completed_at): Row,
) -> Upload {
    Upload {
        slot,
        username,
        filename,
        size: u64::try_from(size).unwrap_or(0),
        content_type,
        token_hash,
        created_at,
        completed_at,
    }
}

const COLUMNS: &str =
    "slot, username, filename, size, content_type, token_hash, created_at, completed_at";

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Reserves `upload` unless it would exceed `daily` (bytes per user over the last 24 hours,
    /// counting every slot handed out) or `global` (bytes of all slots kept). Quotas are checked
    /// and the slot stored in one transaction.
    pub async fn upload_reserve(
        &self,
        upload: &Upload,
        daily: Option<u64>,
        global: Option<u64>,
    ) -> Result<Result<(), QuotaExceeded>, StoreError> {
        let since = upload.created_at - 86_400;
        with_pool!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            if let Some(daily) = daily {
                let (used,): (Option<i64>,) = sqlx::query_as(
                    "SELECT CAST(SUM(size) AS BIGINT) FROM uploads WHERE username = $1 AND created_at > $2",
                )
                .bind(&upload.username)
                .bind(since)
                .fetch_one(&mut *tx)
                .await?;
                let used = u64::try_from(used.unwrap_or(0)).unwrap_or(0);
                if used.saturating_add(upload.size) > daily {
                    return Ok(Err(QuotaExceeded::Daily));
                }
            }
            if let Some(global) = global {
                let (used,): (Option<i64>,) =
                    sqlx::query_as("SELECT CAST(SUM(size) AS BIGINT) FROM uploads")
                        .fetch_one(&mut *tx)
                        .await?;
                let used = u64::try_from(used.unwrap_or(0)).unwrap_or(0);
                if used.saturating_add(upload.size) > global {
                    return Ok(Err(QuotaExceeded::Global));
                }
            }
            sqlx::query(
                "INSERT INTO uploads (slot, username, filename, size, content_type, token_hash, created_at, completed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
            )
            .bind(&upload.slot)
            .bind(&upload.username)
            .bind(&upload.filename)
            .bind(to_i64(upload.size))
            .bind(&upload.content_type)
            .bind(&upload.token_hash)
            .bind(upload.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(Ok(()))
    }

    /// The slot `slot`, if it exists.
    pub async fn upload(&self, slot: &str) -> Result<Option<Upload>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM uploads WHERE slot = $1");
        let row: Option<Row> = with_pool!(self, p => sqlx::query_as(&sql)
            .bind(slot)
            .fetch_optional(p)
            .await)?;
        Ok(row.map(from_row))
    }

    /// Marks `slot` complete; false if it was already complete or does not exist.
    pub async fn upload_complete(&self, slot: &str) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => sqlx::query(
            "UPDATE uploads SET completed_at = $2 WHERE slot = $1 AND completed_at IS NULL",
        )
        .bind(slot)
        .bind(now())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Slots to remove: every slot handed out before `cutoff`, and slots never completed that
    /// were handed out before `abandoned`. Oldest first, at most `limit`.
    pub async fn uploads_expired(
        &self,
        cutoff: i64,
        abandoned: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT slot FROM uploads WHERE created_at < $1 \
             OR (completed_at IS NULL AND created_at < $2) ORDER BY created_at LIMIT $3",
        )
        .bind(cutoff)
        .bind(abandoned)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Forgets `slots` (after their files were removed).
    pub async fn uploads_delete(&self, slots: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        with_pool!(self, p => {
            let mut conn = p.acquire().await?;
            let mut tx = conn.begin().await?;
            for slot in slots {
                n += sqlx::query("DELETE FROM uploads WHERE slot = $1")
                    .bind(slot)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
        });
        Ok(n)
    }

    /// Bytes of all completed uploads (the system page's "Storage used by shared files").
    pub async fn uploads_total_bytes(&self) -> Result<u64, StoreError> {
        let (used,): (Option<i64>,) = with_pool!(self, p => sqlx::query_as(
            "SELECT CAST(SUM(size) AS BIGINT) FROM uploads WHERE completed_at IS NOT NULL",
        )
        .fetch_one(p)
        .await)?;
        Ok(u64::try_from(used.unwrap_or(0)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;

    fn slot(id: &str, user: &str, size: u64, at: i64) -> Upload {
        Upload {
            slot: id.into(),
            username: user.into(),
            filename: "cat.jpg".into(),
            size,
            content_type: "image/jpeg".into(),
            token_hash: "00".into(),
            created_at: at,
            completed_at: None,
        }
    }

    #[tokio::test]
    async fn quotas_count_the_last_day_and_everything_kept() {
        each_backend(|s| async move {
            let t = 1_000_000;
            assert_eq!(
                s.upload_reserve(&slot("a", "alice", 600, t - 90_000), Some(1000), None)
                    .await
                    .unwrap(),
                Ok(())
            );
            // The first slot is older than a day: it does not count against today's quota.
            assert_eq!(
                s.upload_reserve(&slot("b", "alice", 600, t), Some(1000), None)
                    .await
                    .unwrap(),
                Ok(())
            );
            assert_eq!(
                s.upload_reserve(&slot("c", "alice", 401, t + 1), Some(1000), None)
                    .await
                    .unwrap(),
                Err(QuotaExceeded::Daily)
            );
            assert_eq!(
                s.upload_reserve(&slot("c", "alice", 400, t + 1), Some(1000), None)
                    .await
                    .unwrap(),
                Ok(())
            );
            // Someone else has their own daily quota, but all slots count globally.
            assert_eq!(
                s.upload_reserve(&slot("d", "bob", 401, t), Some(1000), Some(2000))
                    .await
                    .unwrap(),
                Err(QuotaExceeded::Global)
            );
            assert_eq!(
                s.upload_reserve(&slot("d", "bob", 400, t), Some(1000), Some(2000))
                    .await
                    .unwrap(),
                Ok(())
            );
            assert!(s.upload("e").await.unwrap().is_none());
            assert_eq!(s.upload("d").await.unwrap().unwrap().size, 400);
        })
        .await;
    }

    #[tokio::test]
    async fn completion_happens_once_and_counts_as_storage() {
        each_backend(|s| async move {
            s.upload_reserve(&slot("a", "alice", 10, now()), None, None)
                .await
                .unwrap()
                .unwrap();
            s.upload_reserve(&slot("b", "alice", 5, now()), None, None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(s.uploads_total_bytes().await.unwrap(), 0);
            assert!(s.upload_complete("a").await.unwrap());
            assert!(!s.upload_complete("a").await.unwrap());
            assert!(!s.upload_complete("nope").await.unwrap());
            assert!(s.upload("a").await.unwrap().unwrap().completed_at.is_some());
            assert_eq!(s.uploads_total_bytes().await.unwrap(), 10);
        })
        .await;
    }

    #[tokio::test]
    async fn expiry_takes_old_slots_and_abandoned_ones() {
        each_backend(|s| async move {
            for (id, at) in [("old", 100), ("open", 500), ("done", 500), ("new", 900)] {
                s.upload_reserve(&slot(id, "alice", 1, at), None, None)
                    .await
                    .unwrap()
                    .unwrap();
            }
            s.upload_complete("done").await.unwrap();
            let gone = s.uploads_expired(200, 600, 10).await.unwrap();
            assert_eq!(gone, vec!["old".to_string(), "open".to_string()]);
            assert_eq!(s.uploads_expired(200, 600, 1).await.unwrap().len(), 1);
            assert_eq!(s.uploads_delete(&gone).await.unwrap(), 2);
            assert!(s.upload("old").await.unwrap().is_none());
            assert!(s.upload("done").await.unwrap().is_some());
        })
        .await;
    }
}
