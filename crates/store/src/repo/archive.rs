//! Message archive (XEP-0313): one row per message per archive owner, written in batches.

use crate::pool::{with_pool, with_writer};
use crate::{Store, StoreError};
use sqlx::Connection;

/// One message to archive for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Owner of the archive.
    pub username: String,
    /// XEP-0359 stanza id the owner sees.
    pub stanza_id: String,
    /// Bare JID of the other party.
    pub with_jid: String,
    /// Serialized message.
    pub stanza: String,
    /// Time of archiving (Unix seconds).
    pub stored_at: i64,
}

/// One archived message as returned by a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// Stanza id (the RSM key clients page with).
    pub stanza_id: String,
    /// Time of archiving.
    pub stored_at: i64,
    /// Serialized message.
    pub stanza: String,
}

/// A page of archive results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    /// Messages in chronological order.
    pub messages: Vec<Archived>,
    /// True when the page reaches the end of the result set in the paging direction.
    pub complete: bool,
}

/// Filters and paging of an archive query.
#[derive(Debug, Clone, Default)]
pub struct ArchiveQuery {
    /// Only messages with this bare JID.
    pub with_jid: Option<String>,
    /// Not before (Unix seconds, inclusive).
    pub start: Option<i64>,
    /// Not after (Unix seconds, inclusive).
    pub end: Option<i64>,
    /// Only messages after this stanza id.
    pub after: Option<String>,
    /// Only messages before this stanza id (and page from the end).
    pub before: Option<String>,
    /// Page backwards from the newest (RSM `<before/>` without a value).
    pub from_end: bool,
    /// Page size.
    pub limit: u32,
}

type ArchivedRow = (i64, String, i64, String);

/// Rows per INSERT statement: 5 parameters each stays far below the bind limits of SQLite
/// (32766) and PostgreSQL (65535). The server's batches (at most 4000 rows) fit in one, and a
/// single statement on its own is its own transaction: SQLite then keeps no statement journal,
/// which it writes (a copy of every page before it changes) for each statement of a transaction
/// that holds several.
pub const ARCHIVE_ROWS_PER_INSERT: usize = 4000;

/// Rows per statement when expiring the archive.
const EXPIRE_CHUNK: i64 = 1000;

/// `INSERT INTO archive … VALUES (…), (…), …` for `rows`.
fn archive_insert<'a, DB>(rows: &'a [ArchiveEntry]) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO archive (username, stanza_id, with_jid, stanza, stored_at) ",
    );
    q.push_values(rows, |mut b, e| {
        b.push_bind(&e.username)
            .push_bind(&e.stanza_id)
            .push_bind(&e.with_jid)
            .push_bind(&e.stanza)
            .push_bind(e.stored_at);
    });
    q
}

impl Store {
    /// Writes a batch of archive rows atomically; returns after the commit. Rows go in as
    /// multi-row INSERTs, so a batch costs a few round trips to the database, not one per row.
    pub async fn archive_messages(&self, entries: &[ArchiveEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        with_writer!(self, p => {
            if entries.len() <= ARCHIVE_ROWS_PER_INSERT {
                // One statement is atomic by itself.
                archive_insert(entries).build().execute(p).await?;
            } else {
                let mut conn = p.acquire().await?;
                let mut tx = conn.begin().await?;
                for chunk in entries.chunks(ARCHIVE_ROWS_PER_INSERT) {
                    archive_insert(chunk).build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        });
        Ok(())
    }

    async fn archive_position(
        &self,
        username: &str,
        stanza_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT archive_id FROM archive WHERE username = $1 AND stanza_id = $2",
        )
        .bind(username)
        .bind(stanza_id)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(id,)| id))
    }

    /// Runs an archive query. An unknown `after`/`before` id is `NotFound` (XEP-0313 §6.2:
    /// `item-not-found`).
    pub async fn query_archive(
        &self,
        username: &str,
        q: &ArchiveQuery,
    ) -> Result<ArchivePage, StoreError> {
        let after = match &q.after {
            Some(id) => Some(
                self.archive_position(username, id)
                    .await?
                    .ok_or(StoreError::NotFound { what: "archive id" })?,
            ),
            None => None,
        };
        let before = match &q.before {
            Some(id) => Some(
                self.archive_position(username, id)
                    .await?
                    .ok_or(StoreError::NotFound { what: "archive id" })?,
            ),
            None => None,
        };
        let backwards = q.from_end || before.is_some();
        let limit = i64::from(q.limit.clamp(1, 1000));
        let order = if backwards { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT archive_id, stanza_id, stored_at, stanza FROM archive WHERE username = $1 \
             AND ($2 IS NULL OR with_jid = $2) AND ($3 IS NULL OR stored_at >= $3) AND ($4 IS NULL OR stored_at <= $4) \
             AND ($5 IS NULL OR archive_id > $5) AND ($6 IS NULL OR archive_id < $6) \
             ORDER BY archive_id {order} LIMIT $7"
        );
        let mut rows: Vec<ArchivedRow> = with_pool!(self, p => sqlx::query_as(&sql)
            .bind(username)
            .bind(&q.with_jid)
            .bind(q.start)
            .bind(q.end)
            .bind(after)
            .bind(before)
            .bind(limit + 1)
            .fetch_all(p)
            .await)?;
        let complete = rows.len() as i64 <= limit;
        rows.truncate(limit as usize);
        if backwards {
            rows.reverse();
        }
        Ok(ArchivePage {
            messages: rows
                .into_iter()
                .map(|(_, stanza_id, stored_at, stanza)| Archived {
                    stanza_id,
                    stored_at,
                    stanza,
                })
                .collect(),
            complete,
        })
    }

    /// Deletes archive rows stored before `cutoff`; returns how many.
    ///
    /// Archive ids grow with time, so the oldest rows come first by id: they go in chunks of
    /// [`EXPIRE_CHUNK`] rows, each its own short statement (the archive's writers wait behind
    /// each one, not behind the whole job), and the job stops at the first row that is not old
    /// enough. No index on the time is needed, which every archived message would pay for; a
    /// row stored while the clock was set back goes when the rows before it have gone.
    pub async fn expire_archive(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.expire_archive_in_chunks(cutoff, EXPIRE_CHUNK).await
    }

    async fn expire_archive_in_chunks(&self, cutoff: i64, chunk: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let rows: Vec<(i64, i64)> = with_pool!(self, p => sqlx::query_as(
                "SELECT archive_id, stored_at FROM archive ORDER BY archive_id LIMIT $1",
            )
            .bind(chunk)
            .fetch_all(p)
            .await)?;
            let old = rows.iter().take_while(|(_, at)| *at < cutoff).count();
            let Some(&(last, _)) = old.checked_sub(1).and_then(|i| rows.get(i)) else {
                return Ok(total);
            };
            total += with_writer!(self, p => sqlx::query(
                "DELETE FROM archive WHERE archive_id <= $1 AND stored_at < $2",
            )
            .bind(last)
            .bind(cutoff)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
            if old < rows.len() || (rows.len() as i64) < chunk {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;
    use crate::Role;

    fn entry(i: i64, with: &str) -> ArchiveEntry {
        ArchiveEntry {
            username: "alice".into(),
            stanza_id: format!("id{i}"),
            with_jid: with.into(),
            stanza: format!("<message>{i}</message>"),
            stored_at: 1000 + i,
        }
    }

    #[tokio::test]
    async fn archive_paging_filters_and_expiry() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            let batch: Vec<_> = (0..5)
                .map(|i| entry(i, if i % 2 == 0 { "bob@x" } else { "carol@x" }))
                .collect();
            store.archive_messages(&batch).await.unwrap();
            let q = ArchiveQuery {
                limit: 2,
                ..Default::default()
            };
            let p1 = store.query_archive("alice", &q).await.unwrap();
            assert_eq!(
                p1.messages
                    .iter()
                    .map(|m| m.stanza_id.as_str())
                    .collect::<Vec<_>>(),
                ["id0", "id1"]
            );
            assert!(!p1.complete);
            let q2 = ArchiveQuery {
                limit: 2,
                after: Some("id3".into()),
                ..Default::default()
            };
            let p2 = store.query_archive("alice", &q2).await.unwrap();
            assert_eq!(p2.messages.len(), 1);
            assert!(p2.complete);
            let last = ArchiveQuery {
                limit: 2,
                from_end: true,
                ..Default::default()
            };
            let p3 = store.query_archive("alice", &last).await.unwrap();
            assert_eq!(
                p3.messages
                    .iter()
                    .map(|m| m.stanza_id.as_str())
                    .collect::<Vec<_>>(),
                ["id3", "id4"]
            );
            let with = ArchiveQuery {
                limit: 10,
                with_jid: Some("bob@x".into()),
                start: Some(1001),
                ..Default::default()
            };
            let p4 = store.query_archive("alice", &with).await.unwrap();
            assert_eq!(
                p4.messages
                    .iter()
                    .map(|m| m.stanza_id.as_str())
                    .collect::<Vec<_>>(),
                ["id2", "id4"]
            );
            let bad = ArchiveQuery {
                limit: 2,
                after: Some("nope".into()),
                ..Default::default()
            };
            assert!(matches!(
                store.query_archive("alice", &bad).await,
                Err(StoreError::NotFound { .. })
            ));
            assert_eq!(store.expire_archive(1002).await.unwrap(), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn expiry_goes_oldest_first_in_chunks_and_stops_at_the_first_recent_row() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            // Stored at 1000..1006, then one at 900 (the clock was set back), then 1007.
            let mut batch: Vec<_> = (0..7).map(|i| entry(i, "bob@x")).collect();
            let mut late = entry(7, "bob@x");
            late.stored_at = 900;
            batch.push(late);
            let mut last = entry(8, "bob@x");
            last.stored_at = 1007;
            batch.push(last);
            store.archive_messages(&batch).await.unwrap();
            let left = |store: Store| async move {
                let q = ArchiveQuery {
                    limit: 100,
                    ..Default::default()
                };
                let page = store.query_archive("alice", &q).await.unwrap();
                page.messages
                    .into_iter()
                    .map(|m| m.stanza_id)
                    .collect::<Vec<_>>()
            };
            // Chunks of 2 rows: 1000..1004 go over three statements.
            assert_eq!(store.expire_archive_in_chunks(1005, 2).await.unwrap(), 5);
            assert_eq!(left(store.clone()).await, ["id5", "id6", "id7", "id8"]);
            // Nothing old at the front: nothing goes, not even the row from 900.
            assert_eq!(store.expire_archive_in_chunks(1005, 2).await.unwrap(), 0);
            assert_eq!(left(store.clone()).await, ["id5", "id6", "id7", "id8"]);
            // Once the rows before it have gone, so does the row from 900.
            assert_eq!(store.expire_archive_in_chunks(1007, 2).await.unwrap(), 3);
            assert_eq!(left(store.clone()).await, ["id8"]);
            assert_eq!(store.expire_archive(2000).await.unwrap(), 1);
            assert!(left(store.clone()).await.is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn big_batches_are_written_whole_or_not_at_all() {
        each_backend(|store| async move {
            store
                .create_account("alice", Role::Normal, &[], None)
                .await
                .unwrap();
            // More rows than one INSERT takes: several statements in one transaction.
            let n = (ARCHIVE_ROWS_PER_INSERT * 2 + 7) as i64;
            let batch: Vec<_> = (0..n).map(|i| entry(i, "bob@x")).collect();
            store.archive_messages(&batch).await.unwrap();
            let count = |store: Store| async move {
                let (n,): (i64,) = with_pool!(store, p => sqlx::query_as(
                    "SELECT COUNT(*) FROM archive",
                )
                .fetch_one(p)
                .await)
                .unwrap();
                n
            };
            assert_eq!(count(store.clone()).await, n);
            let newest = ArchiveQuery {
                limit: 1,
                from_end: true,
                ..Default::default()
            };
            let page = store.query_archive("alice", &newest).await.unwrap();
            assert_eq!(
                page.messages.last().map(|m| m.stanza_id.as_str()),
                Some(format!("id{}", n - 1).as_str())
            );
            // A row for an unknown account in the last chunk fails the batch, and none of it is
            // kept.
            let mut bad: Vec<_> = (n..n + ARCHIVE_ROWS_PER_INSERT as i64 + 5)
                .map(|i| entry(i, "carol@x"))
                .collect();
            if let Some(last) = bad.last_mut() {
                last.username = "nobody".into();
            }
            assert!(store.archive_messages(&bad).await.is_err());
            assert_eq!(count(store.clone()).await, n);
        })
        .await;
    }
}
