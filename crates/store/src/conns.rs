//! A small pool of SQLite connections that hands a connection back without a round trip.
//!
//! sqlx's pool returns every connection with a ping: its drop spawns a task that sends the
//! connection's worker thread an empty command and waits for the answer before the next query
//! may have the connection. That protects a network connection a cancelled query left with
//! unread results; a SQLite connection has none. Its worker runs commands in the order they
//! were sent, so whatever a cancelled query or a dropped transaction left behind (a statement to
//! reset, a rollback) is done before the next user's first command. The ping was a second
//! cross-thread round trip for every query, about a tenth of the CPU a login costs.
//!
//! Connections are opened when first needed, up to the pool's size; waiting callers are served
//! in arrival order (the writer's queue relies on that). A connection whose worker failed is
//! dropped rather than handed out again, and the next caller opens a new one.

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteQueryResult, SqliteRow, SqliteStatement,
    SqliteTypeInfo,
};
use sqlx::{ConnectOptions, Connection, Describe, Either, Execute, Executor};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Up to a fixed number of SQLite connections to one database; cheap to clone.
#[derive(Clone)]
pub(crate) struct SqliteConns {
    inner: Arc<Inner>,
}

struct Inner {
    opts: SqliteConnectOptions,
    /// Open connections nobody holds; the last one returned is the next one handed out, so
    /// under light load one connection (and its page cache) does the work.
    idle: Mutex<Vec<SqliteConnection>>,
    /// One permit per connection that may exist.
    permits: Arc<Semaphore>,
    size: u32,
    /// How long a caller waits for a connection before it gets `PoolTimedOut`.
    acquire_timeout: Duration,
}

/// A connection taken from [`SqliteConns`]; it goes back when dropped.
pub(crate) struct SqliteConn {
    /// Always `Some` until `drop` takes it.
    conn: Option<SqliteConnection>,
    /// Set when the connection's worker failed: it is closed instead of handed out again.
    discard: bool,
    inner: Arc<Inner>,
    // Released after `drop` put the connection back (fields drop after the `Drop` body).
    _permit: OwnedSemaphorePermit,
}

impl SqliteConns {
    /// A pool of at most `size` connections opened with `opts`; one is opened now, so that a
    /// database that cannot be opened fails here.
    pub(crate) async fn open(
        opts: SqliteConnectOptions,
        size: u32,
        acquire_timeout: Duration,
    ) -> Result<SqliteConns, sqlx::Error> {
        let first = opts.connect().await?;
        let size = size.max(1);
        Ok(SqliteConns {
            inner: Arc::new(Inner {
                opts,
                idle: Mutex::new(vec![first]),
                permits: Arc::new(Semaphore::new(size as usize)),
                size,
                acquire_timeout,
            }),
        })
    }

    /// Takes a connection, waiting (in arrival order) while all are in use.
    pub(crate) async fn acquire(&self) -> Result<SqliteConn, sqlx::Error> {
        let permit = tokio::time::timeout(
            self.inner.acquire_timeout,
            self.inner.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
        .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.inner.idle_list().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.inner.opts.connect().await?,
        };
        Ok(SqliteConn {
            conn: Some(conn),
            discard: false,
            inner: self.inner.clone(),
            _permit: permit,
        })
    }

    /// Waits until no connection is in use, then closes them all; later `acquire`s fail with
    /// `PoolClosed`. The last connection to close checkpoints the write-ahead log.
    pub(crate) async fn close(&self) {
        let size = self.inner.size;
        let Ok(all) = self.inner.permits.acquire_many(size).await else {
            return; // closed already
        };
        self.inner.permits.close();
        let conns = std::mem::take(&mut *self.inner.idle_list());
        drop(all);
        for conn in conns {
            if let Err(error) = conn.close().await {
                tracing::warn!(%error, "closing a SQLite connection");
            }
        }
    }
}

impl Inner {
    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        // Nothing can leave the list half-changed, so a panic elsewhere does not make it unusable.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for SqliteConns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConns")
            .field("size", &self.inner.size)
            .field("available", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl SqliteConn {
    /// Marks the connection to be closed instead of handed out again if `result` says its
    /// worker is gone.
    fn check<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(e) = &result {
            self.discard |= is_fatal(e);
        }
        result
    }

    /// Closes the connection when dropped instead of handing it out again (after a change to
    /// its settings that could not be undone, say).
    pub(crate) fn discard(&mut self) {
        self.discard = true;
    }
}

impl Deref for SqliteConn {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a SQLite connection used after it went back to the pool"),
        }
    }
}

impl DerefMut for SqliteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a SQLite connection used after it went back to the pool"),
        }
    }
}

impl Drop for SqliteConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !self.discard && !self.inner.permits.is_closed() {
                self.inner.idle_list().push(conn);
            }
        }
    }
}

/// Takes a connection from `$conns`, awaits `$call` on it (`$c` names the connection) and marks
/// the connection for closing if its worker failed; the future is boxed, as `Executor` wants.
macro_rules! on_conn {
    ($conns:expr, $c:ident => $call:expr) => {{
        let conns = $conns.clone();
        Box::pin(async move {
            let mut conn = conns.acquire().await?;
            let $c: &mut SqliteConnection = &mut conn;
            let result = $call.await;
            conn.check(result)
        })
    }};
}

impl<'p> Executor<'p> for &'_ SqliteConns {
    type Database = Sqlite;

    // Only the streaming form gathers the rows first (none of the store's queries stream):
    // the stream cannot borrow a connection it owns.
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        let conns = self.clone();
        let all = async move {
            let mut conn = conns.acquire().await?;
            let rows = conn.fetch_many(query).collect::<Vec<_>>().await;
            conn.discard |= rows.iter().any(|r| r.as_ref().is_err_and(is_fatal));
            Ok::<_, sqlx::Error>(rows)
        };
        Box::pin(
            stream::once(all)
                .map(|rows| match rows {
                    Ok(rows) => stream::iter(rows).left_stream(),
                    Err(e) => stream::iter(vec![Err(e)]).right_stream(),
                })
                .flatten(),
        )
    }

    fn fetch_all<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Vec<SqliteRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        on_conn!(self, c => c.fetch_all(query))
    }

    fn execute<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<SqliteQueryResult, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        on_conn!(self, c => c.execute(query))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        on_conn!(self, c => c.fetch_optional(query))
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        on_conn!(self, c => c.prepare_with(sql, parameters))
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>>
    where
        'p: 'e,
    {
        on_conn!(self, c => c.describe(sql))
    }
}

fn is_fatal(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::WorkerCrashed | sqlx::Error::Io(_))
}

#[cfg(test)]
mod tests {
    use super::SqliteConns;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::Connection;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    async fn conns(dir: &std::path::Path, size: u32, timeout_ms: u64) -> SqliteConns {
        let opts = SqliteConnectOptions::new()
            .filename(dir.join("conns.sqlite"))
            .create_if_missing(true);
        let conns = SqliteConns::open(opts, size, Duration::from_millis(timeout_ms))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            .execute(&conns)
            .await
            .unwrap();
        conns
    }

    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back_before_the_next_user() {
        let dir = snikket_testkit::temp_dir();
        let conns = conns(dir.path(), 1, 5_000).await;
        {
            let mut c = conns.acquire().await.unwrap();
            let mut tx = c.begin().await.unwrap();
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
            // Neither committed nor rolled back: both dropped here.
        }
        let mut c = conns.acquire().await.unwrap();
        let mut tx = c.begin().await.unwrap(); // fails if the old transaction were still open
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0);
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_query_leaves_a_usable_connection() {
        let dir = snikket_testkit::temp_dir();
        let conns = conns(dir.path(), 1, 5_000).await;
        let long = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                    SELECT i FROM n LIMIT 1 OFFSET 3000000";
        let cut = tokio::time::timeout(
            Duration::from_millis(20),
            sqlx::query(long).fetch_optional(&conns),
        )
        .await;
        assert!(cut.is_err(), "the query should still have been running");
        let (two,): (i64,) = sqlx::query_as("SELECT 1 + 1")
            .fetch_one(&conns)
            .await
            .unwrap();
        assert_eq!(two, 2);
    }

    #[tokio::test]
    async fn waiters_get_connections_in_arrival_order_and_no_more_than_the_size() {
        let dir = snikket_testkit::temp_dir();
        let conns = conns(dir.path(), 2, 200).await;
        let a = conns.acquire().await.unwrap();
        let b = conns.acquire().await.unwrap();
        // A third caller waits, and gives up after the timeout.
        assert!(matches!(
            conns.acquire().await.err(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..4 {
            let (conns, order) = (conns.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let c = conns.acquire().await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                c.map(drop)
            }));
            // Each is queued before the next one arrives.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(a);
        drop(b);
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_discarded_connection_is_replaced_and_a_closed_pool_refuses() {
        let dir = snikket_testkit::temp_dir();
        let conns = conns(dir.path(), 1, 5_000).await;
        let timeout = |c: SqliteConns| async move {
            let (ms,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
                .fetch_one(&c)
                .await
                .unwrap();
            ms
        };
        let default = timeout(conns.clone()).await;
        let mut c = conns.acquire().await.unwrap();
        sqlx::query("PRAGMA busy_timeout = 1")
            .execute(&mut *c)
            .await
            .unwrap();
        c.discard();
        drop(c);
        assert_eq!(timeout(conns.clone()).await, default);
        conns.close().await;
        assert!(matches!(
            conns.acquire().await.err(),
            Some(sqlx::Error::PoolClosed)
        ));
    }
}
