//! The relay port range: hands out UDP sockets on free ports from min..=max only.
//!
//! A port another program holds is skipped (the bind fails); when every port is taken the caller
//! answers 508 (Insufficient Capacity). A lease returns its port when dropped.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// No free port in the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("relay port range exhausted")]
pub struct Exhausted;

#[derive(Debug)]
struct Inner {
    used: HashSet<u16>,
    next: u16,
}

/// The range and the ports in use.
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    inner: Mutex<Inner>,
}

/// A port held by an allocation, released on drop.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl PortLease {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut i) = self.pool.inner.lock() {
            i.used.remove(&self.port);
        }
    }
}

impl PortPool {
    /// A pool over `min..=max` (`min <= max` is guaranteed by the config).
    pub fn new(min: u16, max: u16) -> Arc<PortPool> {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        Arc::new(PortPool {
            min,
            max,
            inner: Mutex::new(Inner {
                used: HashSet::new(),
                next: min,
            }),
        })
    }

    /// Number of ports in the range.
    pub fn size(&self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }

    /// Lowest port.
    pub fn min(&self) -> u16 {
        self.min
    }

    /// Highest port.
    pub fn max(&self) -> u16 {
        self.max
    }

    /// Ports currently leased.
    pub fn in_use(&self) -> u32 {
        self.inner.lock().map(|i| i.used.len() as u32).unwrap_or(0)
    }

    /// Binds a UDP socket on `ip` at the next free port of the range, round robin so a port just
    /// released is not reused at once (late packets from the old peer would reach the new one).
    pub fn allocate(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<(std::net::UdpSocket, PortLease), Exhausted> {
        self.allocate_even(ip, false, false).map(|(s, l, _)| (s, l))
    }

    /// Like [`PortPool::allocate`]; with `even` only an even port is used, and with
    /// `reserve_next` the following odd port is bound too (EVEN-PORT with the R bit, RFC 8656
    /// §14.6) and returned as the second pair.
    #[allow(clippy::type_complexity)]
    pub fn allocate_even(
        self: &Arc<Self>,
        ip: IpAddr,
        even: bool,
        reserve_next: bool,
    ) -> Result<
        (
            std::net::UdpSocket,
            PortLease,
            Option<(std::net::UdpSocket, PortLease)>,
        ),
        Exhausted,
    > {
        let mut inner = self.inner.lock().map_err(|_| Exhausted)?;
        let size = self.size();
        for _ in 0..size {
            let port = inner.next;
            inner.next = if port >= self.max { self.min } else { port + 1 };
            if inner.used.contains(&port) || ((even || reserve_next) && port % 2 != 0) {
                continue;
            }
            if reserve_next && (port >= self.max || inner.used.contains(&(port + 1))) {
                continue;
            }
            let sock = match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(port, error = %e, "relay port busy, skipping");
                    continue;
                }
            };
            let second = if reserve_next {
                match std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::debug!(port = port + 1, error = %e, "relay port busy, skipping");
                        continue;
                    }
                }
            } else {
                None
            };
            inner.used.insert(port);
            let second = second.map(|s| {
                inner.used.insert(port + 1);
                (
                    s,
                    PortLease {
                        pool: Arc::clone(self),
                        port: port + 1,
                    },
                )
            });
            return Ok((
                sock,
                PortLease {
                    pool: Arc::clone(self),
                    port,
                },
                second,
            ));
        }
        Err(Exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_ports_from_the_range_and_skips_busy_ones() {
        // Find two adjacent free ports and occupy the first with "another program".
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let (min, max) = if base < 65534 {
            (base, base + 1)
        } else {
            (base - 1, base)
        };
        let blocker = std::net::UdpSocket::bind(("127.0.0.1", min)).unwrap();
        let pool = PortPool::new(min, max);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (s, lease) = pool.allocate(ip).unwrap();
        assert_eq!(lease.port(), max);
        assert_eq!(s.local_addr().unwrap().port(), max);
        assert_eq!(pool.allocate(ip).unwrap_err(), Exhausted);
        assert_eq!(pool.in_use(), 1);
        drop(blocker);
        let (_s2, l2) = pool.allocate(ip).unwrap();
        assert_eq!(l2.port(), min);
        drop(lease);
        drop(s);
        assert_eq!(pool.in_use(), 1);
        assert_eq!(pool.size(), 2);
    }
}
