//! Login throttling: at most N failed attempts per client address in a sliding window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts per address.
pub(crate) struct Throttle {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Throttle {
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        Throttle {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may try now.
    pub(crate) fn allowed(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        map.retain(|_, v| {
            v.retain(|t| now.duration_since(*t) < window);
            !v.is_empty()
        });
        map.get(&ip).is_none_or(|v| v.len() < self.limit)
    }

    /// Records a failed attempt by `ip`.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(ip).or_default().push(Instant::now());
    }

    /// Forgets `ip` after a successful login.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_address() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(t.allowed(a));
        t.failed(a);
        assert!(t.allowed(a));
        t.failed(a);
        assert!(!t.allowed(a));
        assert!(t.allowed(b));
        t.succeeded(a);
        assert!(t.allowed(a));
    }
}
