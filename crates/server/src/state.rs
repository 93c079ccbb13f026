//! Shared handles every connection task gets: configuration, store, router, TLS, throttles.

use crate::c2s::listener::IpLimiter;
use crate::router::Router;
use snikket_config::Config;
use snikket_runtime::CertResolver;
use snikket_store::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything a session needs, behind one `Arc`.
pub struct State {
    /// Validated configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Live sessions.
    pub router: Router,
    /// TLS for client connections.
    pub tls: Arc<rustls::ServerConfig>,
    /// The certificate behind `tls` (for channel binding and readiness).
    pub resolver: Arc<CertResolver>,
    /// Connections per address.
    pub ip_limiter: Arc<IpLimiter>,
    /// Failed logins per address.
    pub auth_throttle: AuthThrottle,
    /// Masks FAST tokens at rest (`c2s::fast::seal`).
    pub fast_key: snikket_runtime::Secret<String>,
    /// TURN REST secret for XEP-0215 credentials (`None`: TURN not offered).
    pub turn_secret: Option<snikket_runtime::Secret<String>>,
    /// Sessions waiting to be resumed (XEP-0198).
    pub sm: crate::c2s::sm::Registry,
    /// Personal eventing: sessions' notification interests.
    pub pep: crate::pep::Pep,
    /// Push notifications (XEP-0357): sessions' registrations and answers awaited.
    pub push: crate::push::Push,
    /// Batched archive writer.
    pub archiver: crate::archive::Archiver,
    /// Process start, for uptime.
    pub started: Instant,
    /// XEP-0115 `<c/>` for stream features, computed once from the server's disco#info.
    pub caps: Option<minidom::Element>,
    /// The `node#ver` of `caps`, which disco#info answers to.
    pub caps_node: Option<String>,
    /// Cached blocklists (XEP-0191).
    pub blocklists: crate::blocking::Blocklists,
    /// Last-activity writes, coalesced.
    pub activity: Activity,
}

/// Locks a mutex, carrying on if a panicking holder poisoned it (the data stays consistent:
/// every critical section only inserts, removes or replaces whole entries).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Slows down repeated authentication failures per IP address (exponential, capped), without
/// ever locking an account: the real user on another address is unaffected.
#[derive(Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// Records a failure and returns how long to wait before answering it.
    pub fn failure(&self, ip: IpAddr) -> Duration {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, (_, t)| t.elapsed() < Duration::from_secs(900));
        }
        let e = m.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() > Duration::from_secs(900) {
            *e = (0, Instant::now());
        }
        e.0 = e.0.saturating_add(1);
        e.1 = Instant::now();
        Duration::from_millis(250u64.saturating_mul(1u64 << e.0.min(5))).min(Duration::from_secs(8))
    }

    /// Clears the address after a success.
    pub fn success(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// Last-activity bookkeeping (`accounts.last_active_at`, shown in the admin panel and counted
/// for the 1/7/30-day active-user figures) without a database write at every connect and
/// disconnect: a phone on a flaky network reconnects many times a minute, and each write takes
/// SQLite's write lock. The stored time is kept accurate to [`Activity::GRANULARITY_SECS`].
#[derive(Default)]
pub struct Activity {
    /// When each account's last-activity time was last written, Unix seconds.
    written: Mutex<HashMap<String, i64>>,
}

impl Activity {
    /// How stale the stored last-activity time may be.
    pub const GRANULARITY_SECS: i64 = 60;
    /// Above this many remembered accounts, entries older than the granularity are dropped.
    const PRUNE_ABOVE: usize = 4096;

    /// Records activity of `username` now: writes it unless it was written less than
    /// [`Self::GRANULARITY_SECS`] ago.
    pub async fn touch(&self, store: &Store, username: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        {
            let mut written = lock(&self.written);
            if written
                .get(username)
                .is_some_and(|&t| now - t < Self::GRANULARITY_SECS && t <= now)
            {
                return;
            }
            if written.len() > Self::PRUNE_ABOVE {
                written.retain(|_, t| now - *t < Self::GRANULARITY_SECS);
            }
            written.insert(username.to_string(), now);
        }
        if let Err(e) = store.touch_account(username).await {
            lock(&self.written).remove(username);
            tracing::warn!(error = %e, "recording last activity failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use snikket_store::Role;

    async fn last_active(store: &Store) -> i64 {
        store
            .account("alice")
            .await
            .unwrap()
            .unwrap()
            .last_active_at
            .unwrap()
    }

    #[tokio::test]
    async fn activity_is_written_at_most_once_per_granularity() {
        let dir = snikket_testkit::temp_dir();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = Store::open_url(&url).await.unwrap();
        store
            .create_account("alice", Role::Normal, &[], None)
            .await
            .unwrap();
        let activity = Activity::default();
        activity.touch(&store, "alice").await;
        let first = last_active(&store).await;
        // A reconnect a second later writes nothing.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        activity.touch(&store, "alice").await;
        assert_eq!(last_active(&store).await, first);
        // Once the last write is older than the granularity, the next touch writes.
        lock(&activity.written).insert("alice".into(), first - Activity::GRANULARITY_SECS);
        activity.touch(&store, "alice").await;
        assert!(last_active(&store).await > first);
        // A failed write is forgotten, so the next touch tries again.
        store.close().await;
        activity.touch(&store, "bob").await;
        assert!(!lock(&activity.written).contains_key("bob"));
    }
}
