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
    /// File sharing (XEP-0363): the `share.DOMAIN` service.
    pub uploads: Arc<crate::upload::Uploads>,
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
    /// Last activity of accounts, written in batches.
    pub activity: crate::activity::Activity,
    /// Counts client connections opened and closed, to give freed memory back after bursts.
    pub trimmer: Arc<snikket_runtime::memory::Trimmer>,
    /// Process start, for uptime.
    pub started: Instant,
    /// XEP-0115 `<c/>` for stream features, computed once from the server's disco#info.
    pub caps: Option<minidom::Element>,
    /// The `node#ver` of `caps`, which disco#info answers to.
    pub caps_node: Option<String>,
    /// Occupants and recent messages of circle group chats.
    pub muc: crate::muc::Rooms,
    /// Federation: links to other servers.
    pub s2s: crate::s2s::S2s,
    /// Cached blocklists (XEP-0191).
    pub blocklists: crate::blocking::Blocklists,
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
