//! `SNIKKET_RETENTION_DAYS` (spec 2, 4.2): archived messages older than the period are deleted,
//! and accounts whose owners deleted them (XEP-0077 remove) are purged once the same grace period
//! has passed, unless an admin restored them meanwhile; shared files expire after the same period.
//! Runs hourly until shutdown.

use snikket_runtime::{CancellationToken, TaskTracker};
use snikket_store::Store;

/// How often the retention job runs.
const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Starts the hourly retention job.
pub fn spawn(
    store: Store,
    uploads: std::sync::Arc<crate::upload::Uploads>,
    retention_days: u32,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    run_once(&store, retention_days).await;
                    match uploads.expire(&store).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "expired shared files"),
                        Err(e) => tracing::warn!(error = %e, "expiring shared files failed"),
                    }
                }
            }
        }
    });
}

/// One pass: expire the archive, purge accounts past their grace period.
pub async fn run_once(store: &Store, retention_days: u32) {
    let cutoff = snikket_store::now() - i64::from(retention_days) * 86_400;
    match store.expire_archive(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "expired archived messages"),
        Err(e) => tracing::warn!(error = %e, "archive expiry failed"),
    }
    match store.purge_pending_deletions(cutoff).await {
        Ok(names) if names.is_empty() => {}
        Ok(names) => tracing::info!(
            count = names.len(),
            accounts = ?names,
            "deleted accounts whose grace period ended"
        ),
        Err(e) => tracing::warn!(error = %e, "purging deleted accounts failed"),
    }
}
