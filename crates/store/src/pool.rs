//! Connection pools for both backends and embedded migrations.

use crate::conns::SqliteConns;
use crate::StoreError;
use snikket_config::Database;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long a SQLite connection waits for a lock before it gives up.
const BUSY_TIMEOUT_MS: u64 = 10_000;

/// Write-ahead log frames (pages) past which a checkpoint restarts the log: 16 MiB of 4 KiB pages.
const WAL_RESTART_FRAMES: i64 = 4096;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (the embedded default).
    Sqlite,
    /// PostgreSQL (larger installs).
    Postgres,
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqliteConns),
    Postgres(PgPool),
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
    /// SQLite only: the one connection the hot and bulk writes go through (see `with_writer!`).
    pub(crate) writer: Option<SqliteConns>,
}

/// Runs the same code against whichever pool the store has; `$p` names the pool in `$body`.
///
/// On SQLite, `$p` is a [`SqliteConns`] (a `&SqlitePool` stand-in without sqlx's ping after each
/// query); a transaction takes a connection first: `let mut c = p.acquire().await?;
/// let mut tx = c.begin().await?;`.
macro_rules! with_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            $crate::pool::Pool::Sqlite($p) => $body,
            $crate::pool::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Like `with_pool!`, for writes: on SQLite `$p` is the store's writer, a pool of one
/// connection.
///
/// SQLite has one writer at a time. A connection that finds another writing waits in SQLite's
/// busy handler, which polls with sleeps of up to 100 ms: under load, with the archive's batches
/// committing back to back, a writer could lose that race for seconds, and the archive losing it
/// once stalled every message of its batch. And a connection drops its whole page cache when it
/// finds the database changed by another one, so writes spread over the pool each began by
/// reading their B-tree pages afresh. Through one connection, writers queue in arrival order
/// (the pool hands connections out fairly) and that connection's cache stays warm. A write inside
/// `with_writer!` must not call a function that uses it again: it would wait for itself.
macro_rules! with_writer {
    ($store:expr, $p:ident => $body:expr) => {
        match (&$store.writer, &$store.pool) {
            (Some($p), _) => $body,
            (None, $crate::pool::Pool::Sqlite($p)) => $body,
            (None, $crate::pool::Pool::Postgres($p)) => $body,
        }
    };
}
pub(crate) use with_writer;

impl Store {
    /// Opens (creating if needed) the configured database and brings its schema up to date.
    pub async fn open(db: &Database) -> Result<Store, StoreError> {
        match db {
            Database::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Open(format!("creating {}: {e}", dir.display()))
                    })?;
                }
                Self::open_sqlite(SqliteConnectOptions::new().filename(path)).await
            }
            Database::Postgres(url) => Self::open_url(url).await,
        }
    }

    /// Opens a database from a `sqlite://` or `postgres://` URL.
    pub async fn open_url(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| StoreError::Open(e.to_string()))?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Ok(Store {
                pool: Pool::Postgres(pool),
                writer: None,
            })
        } else {
            let opts =
                SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Open(e.to_string()))?;
            Self::open_sqlite(opts).await
        }
    }

    async fn open_sqlite(opts: SqliteConnectOptions) -> Result<Store, StoreError> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            // No checkpoint inside a committing transaction: SQLite's automatic one runs in
            // whichever connection commits past 1000 pages, and its fsyncs then stall that
            // commit (and every message waiting for it). The server checkpoints from its own
            // connection instead ([`Store::checkpoint`]); the last connection to close does too.
            .pragma("wal_autocheckpoint", "0")
            // SQLite keeps up to 2 MiB of pages per connection by default, and each reader
            // caches the same hot pages again, more than the rest of an idle server. 64 KiB
            // each (16 pages) keep the roots and upper B-tree levels of what logins and message
            // routing read; a page that is not cached is one read from the kernel's page cache
            // away. Logins and messages were as fast as with 256 KiB, and an idle server with
            // 1000 sessions 0.8 MB smaller. (The writer's own is set below.)
            .pragma("cache_size", "-64")
            // A log that grew under load is cut back to this size when it starts afresh.
            .pragma("journal_size_limit", "16777216");
        // The writer's cache stays valid from one write to the next (nobody else writes), so it
        // may hold the B-tree pages writes keep coming back to, the archive indexes' last leaves
        // above all; SQLite allocates the pages as they are used.
        let writer_opts = opts.clone().pragma("cache_size", "-16384");
        // Two readers: reads are short (a login makes six, each holding a reader for tens of
        // microseconds), and every reader costs a thread, SQLite's own allocations and a cache
        // of the same hot pages again: about half a megabyte each once used. Four did not log
        // users in faster than two (1880 logins/s either way on one core).
        let open = |opts, size, timeout| async move {
            SqliteConns::open(opts, size, Duration::from_secs(timeout))
                .await
                .map_err(|e| StoreError::Open(e.to_string()))
        };
        let pool = open(opts, 2, 30).await?;
        let writer = open(writer_opts, 1, 60).await?;
        {
            let mut conn = writer.acquire().await?;
            SQLITE_MIGRATIONS.run(&mut *conn).await?;
        }
        Ok(Store {
            pool: Pool::Sqlite(pool),
            writer: Some(writer),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes all connections, waiting for running queries.
    pub async fn close(&self) {
        if let Some(w) = &self.writer {
            w.close().await;
        }
        with_pool!(self, p => p.close().await)
    }

    /// Copies what the SQLite write-ahead log holds into the database file (without waiting for
    /// readers), on a connection of its own so that writers never wait for its fsyncs. Call it
    /// every second or so; a no-op on PostgreSQL.
    ///
    /// Under a steady stream of commits such a checkpoint never catches up with the end of the
    /// log, and SQLite starts the log afresh only after one did: the log would grow without
    /// bound (a gigabyte in half a minute of full load), and reads, which search it, slow down
    /// as it grows. So when it holds more than [`WAL_RESTART_FRAMES`], the checkpoint runs on the
    /// writer, in the writes' queue, finishes the job and lets the next commit start the log from
    /// the top.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite(p) = &self.pool {
            let (_busy, frames, _copied): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(p)
                    .await?;
            if let (true, Some(w)) = (frames >= WAL_RESTART_FRAMES, &self.writer) {
                // It waits for readers of older snapshots to finish, holding up the writes
                // queued behind it: at most a second (a long reader, such as a backup, makes it
                // give up and try again at the next tick), not the writes' ten.
                let mut c = w.acquire().await?;
                sqlx::query("PRAGMA busy_timeout = 1000")
                    .execute(&mut *c)
                    .await?;
                let done = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                    .execute(&mut *c)
                    .await;
                let restore = format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}");
                if let Err(e) = sqlx::query(&restore).execute(&mut *c).await {
                    // Not handed out again with the short timeout: the pool opens a new one.
                    c.discard();
                    return Err(e.into());
                }
                done?;
            }
        }
        Ok(())
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[tokio::test]
    async fn sqlite_checkpoints_only_when_asked() {
        crate::tests_support::each_backend(|store| async move {
            store
                .create_account("alice", crate::Role::Normal, &[], None)
                .await
                .unwrap();
            if let super::Pool::Sqlite(p) = &store.pool {
                let (pages,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
                    .fetch_one(p)
                    .await
                    .unwrap();
                assert_eq!(pages, 0, "commits must not checkpoint");
            }
            store.checkpoint().await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn a_long_log_is_restarted_once_readers_let_go() {
        let dir = std::env::temp_dir().join(format!("snikket-store-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("wal.sqlite");
        let store = super::Store::open_url(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        store
            .create_account("alice", crate::Role::Normal, &[], None)
            .await
            .unwrap();
        let super::Pool::Sqlite(p) = &store.pool else {
            panic!("not SQLite")
        };
        // A reader holds a snapshot from before the writes, so a passive checkpoint cannot copy
        // what comes after it, and the log could never start afresh.
        let mut reader = p.acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        let row = |id: String| crate::ArchiveEntry {
            username: "alice".into(),
            stanza_id: id,
            with_jid: "bob@x".into(),
            stanza: "x".repeat(1024),
            stored_at: 1,
        };
        for b in 0..24 {
            let batch: Vec<_> = (0..1000).map(|i| row(format!("{b}-{i}"))).collect();
            store.archive_messages(&batch).await.unwrap();
        }
        let wal = dir.join("wal.sqlite-wal");
        let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let limit = 16 << 20;
        assert!(size() > limit, "the log holds {} bytes", size());
        // The reader lets go while the checkpoint waits for it.
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
        };
        let (done, ()) = tokio::join!(store.checkpoint(), release);
        done.unwrap();
        drop(reader);
        // The next commit starts the log from the top and cuts the file back.
        store.archive_messages(&[row("last".into())]).await.unwrap();
        assert!(size() <= limit, "the log still holds {} bytes", size());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn names(dir: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../migrations")
            .join(dir);
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let s = names("sqlite");
        assert!(!s.is_empty());
        assert_eq!(s, names("postgres"));
    }
}
