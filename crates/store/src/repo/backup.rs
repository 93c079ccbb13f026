//! Consistent snapshots of a database that is in use, for `snikket-server backup`.
//!
//! SQLite's `VACUUM INTO` copies the whole database inside one read transaction, so writers keep
//! going and the copy is a single point in time (unlike copying the file and its WAL by hand).
//! PostgreSQL has no in-band equivalent: its operators use `pg_dump`, so the method refuses there.

use crate::pool::Pool;
use crate::{Store, StoreError};
use std::path::Path;

impl Store {
    /// Writes a consistent, compacted copy of the SQLite database to `dest`, which must not exist.
    /// Other connections may keep reading and writing meanwhile.
    pub async fn snapshot_into(&self, dest: &Path) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let dest = dest.to_str().ok_or_else(|| {
                    StoreError::Conflict(format!("snapshot path {} is not UTF-8", dest.display()))
                })?;
                sqlx::query("VACUUM INTO ?").bind(dest).execute(p).await?;
                Ok(())
            }
            Pool::Postgres(_) => Err(StoreError::Conflict(
                "PostgreSQL databases are backed up with pg_dump, not by the server".into(),
            )),
        }
    }

    /// Checks the database file's structure (`PRAGMA quick_check` on SQLite; nothing to check on
    /// PostgreSQL, whose server does that itself).
    pub async fn check_integrity(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let rows: Vec<(String,)> =
                    sqlx::query_as("PRAGMA quick_check").fetch_all(p).await?;
                match rows.as_slice() {
                    [(ok,)] if ok == "ok" => Ok(()),
                    _ => Err(StoreError::Corrupt(
                        rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("; "),
                    )),
                }
            }
            Pool::Postgres(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Backend, Store};

    #[tokio::test]
    async fn snapshot_is_a_working_copy_taken_while_open() {
        let dir = snikket_testkit::temp_dir();
        let url = format!("sqlite://{}", dir.path().join("live.sqlite").display());
        let store = Store::open_url(&url).await.unwrap();
        store.ensure_default_circle("Family").await.unwrap();
        let dest = dir.path().join("copy.sqlite");
        store.snapshot_into(&dest).await.unwrap();
        // The live store keeps working and changes after the snapshot are not in it.
        store.create_circle("Later").await.unwrap();
        assert!(
            store.snapshot_into(&dest).await.is_err(),
            "existing file is never overwritten"
        );
        store.close().await;

        let copy = Store::open_url(&format!("sqlite://{}", dest.display()))
            .await
            .unwrap();
        assert_eq!(copy.backend(), Backend::Sqlite);
        copy.check_integrity().await.unwrap();
        assert_eq!(
            copy.circle("default").await.unwrap().unwrap().name,
            "Family"
        );
        assert!(copy.find_circle("Later").await.unwrap().is_none());
        copy.close().await;
    }

    #[tokio::test]
    async fn integrity_check_rejects_a_damaged_file() {
        let dir = snikket_testkit::temp_dir();
        let live = dir.path().join("live.sqlite");
        let store = Store::open_url(&format!("sqlite://{}", live.display()))
            .await
            .unwrap();
        store.ensure_default_circle("Family").await.unwrap();
        // A snapshot is a self-contained file (no WAL), so damaging it damages the data.
        let path = dir.path().join("bad.sqlite");
        store.snapshot_into(&path).await.unwrap();
        store.close().await;
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() >= 3 * 4096, "{} bytes", bytes.len());
        for b in &mut bytes[4096..3 * 4096] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let damaged = match Store::open_url(&format!("sqlite://{}", path.display())).await {
            Ok(s) => s.check_integrity().await.is_err(),
            Err(_) => true,
        };
        assert!(damaged, "a damaged database must not pass");
    }
}
