//! When accounts were last active (the admin panel's "last active"), recorded in batches.
//!
//! Every login and logout used to write the account row at once: two writes in the path of
//! every connection, for a figure shown with a day's precision. Sessions now note the time here
//! and a task writes what has gathered every few seconds, a hundred accounts per transaction, and once more when
//! the server stops, after the sessions have ended.

use snikket_runtime::{CancellationToken, TaskTracker};
use snikket_store::Store;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How often gathered activity is written.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Accounts written per transaction: a short write lock, and few dirty pages held at once.
const FLUSH_CHUNK: usize = 100;

/// Activity noted since the last write: username → Unix time.
#[derive(Debug, Default)]
pub struct Activity {
    seen: Mutex<HashMap<String, i64>>,
}

impl Activity {
    /// Notes that `username` is active now.
    pub fn touch(&self, username: &str) {
        let now = snikket_store::now();
        if let Ok(mut seen) = self.seen.lock() {
            match seen.get_mut(username) {
                Some(at) => *at = (*at).max(now),
                None => {
                    seen.insert(username.to_owned(), now);
                }
            }
        }
    }

    /// Writes what has been noted; on failure it is kept for the next write.
    pub async fn flush(&self, store: &Store) {
        let batch: Vec<(String, i64)> = match self.seen.lock() {
            Ok(mut seen) => seen.drain().collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        for chunk in batch.chunks(FLUSH_CHUNK) {
            if let Err(e) = store.record_activity(chunk).await {
                tracing::warn!(error = %e, accounts = chunk.len(), "recording last activity failed");
                if let Ok(mut seen) = self.seen.lock() {
                    for (username, at) in chunk {
                        let entry = seen.entry(username.clone()).or_insert(*at);
                        *entry = (*entry).max(*at);
                    }
                }
            }
        }
    }

    /// Writes every [`FLUSH_EVERY`] until `shutdown`; the final write is the caller's, once the
    /// sessions have ended.
    pub fn spawn(
        state: std::sync::Arc<crate::state::State>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => state.activity.flush(&state.store).await,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_time_per_account_is_kept() {
        let a = Activity::default();
        a.touch("alice");
        a.touch("bob");
        a.touch("alice");
        let seen = a.seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 2);
        assert!(seen["alice"] >= seen["bob"] - 1);
    }

    #[tokio::test]
    async fn flush_writes_and_empties() {
        use snikket_testkit::db::{Backend, TestDb};
        let db = TestDb::create(Backend::Sqlite).await;
        let store = Store::open_url(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .create_account("alice", snikket_store::Role::Normal, &[], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let a = Activity::default();
        a.touch("alice");
        a.flush(&store).await;
        let account = store.account("alice").await.ok().flatten();
        assert!(account.and_then(|a| a.last_active_at).is_some());
        assert!(a.seen.lock().map(|s| s.is_empty()).unwrap_or(false));
    }
}
