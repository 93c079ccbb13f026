//! Which address relay sockets bind to and which one clients are told (spec 1.2,
//! `snikket-turn-addresses`).
//!
//! The domain's A/AAAA records give the public address. If it is an address of this host, relays
//! bind to it and advertise it. Otherwise the host is behind NAT: relays bind to
//! `SNIKKET_TWEAK_TURNSERVER_INTERNAL_IP` (or all addresses) and advertise the public one. A
//! loopback-only server (tests, or a TURN server behind a local proxy) never looks at DNS.

use crate::TurnError;
use snikket_config::Config;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Bind and advertised relay addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddress {
    /// What relay sockets bind to.
    pub bind: IpAddr,
    /// What XOR-RELAYED-ADDRESS says.
    pub advertised: IpAddr,
}

/// Whether `ip` belongs to this host (binding to it succeeds).
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn is_public(ip: IpAddr) -> bool {
    crate::policy::PeerPolicy::default().allows(ip)
}

/// The source address the kernel would use towards the internet. `connect` on a UDP socket only
/// consults the routing table; no packet is sent.
fn default_source(v6: bool) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v6 {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            "[2001:db8::1]:9".parse().ok()?,
        )
    } else {
        (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            "192.0.2.1:9".parse().ok()?,
        )
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(probe).ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// Picks the relay address for `config`.
pub async fn select(config: &Config) -> Result<RelayAddress, TurnError> {
    let binds = &config.bind_interfaces;
    if !binds.is_empty() && binds.iter().all(|ip| ip.is_loopback()) {
        let ip = binds[0];
        return Ok(RelayAddress {
            bind: ip,
            advertised: ip,
        });
    }
    let host = config.domain.ascii.clone();
    let resolved: Vec<IpAddr> = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host((host.as_str(), 0)),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        Ok(Err(e)) => {
            tracing::warn!(domain = %host, error = %e, "cannot resolve the domain for the turn address");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(domain = %host, "timed out resolving the domain for the turn address");
            Vec::new()
        }
    };
    let v4 = resolved.iter().copied().find(|ip| ip.is_ipv4());
    let v6 = resolved
        .iter()
        .copied()
        .find(|ip| ip.is_ipv6() && config.ipv6);
    for ip in [v4, v6].into_iter().flatten() {
        if is_local(ip) {
            tracing::info!(address = %ip, "relay address is the domain's address on this host");
            return Ok(RelayAddress {
                bind: ip,
                advertised: ip,
            });
        }
    }
    if let Some(public) = v4.or(v6) {
        tracing::warn!(public = %public, "the domain's address is not on this host: assuming NAT");
        let bind = match config.turn.internal_ip {
            Some(ip) if is_local(ip) && ip.is_ipv4() == public.is_ipv4() => ip,
            Some(ip) => {
                tracing::warn!(internal = %ip, "SNIKKET_TWEAK_TURNSERVER_INTERNAL_IP is not usable here; binding relays to all addresses");
                unspecified(public)
            }
            None => unspecified(public),
        };
        return Ok(RelayAddress {
            bind,
            advertised: public,
        });
    }
    let guess = default_source(false)
        .filter(|ip| is_public(*ip))
        .or_else(|| default_source(true).filter(|ip| is_public(*ip)))
        .or_else(|| default_source(false))
        .ok_or_else(|| {
            TurnError::NoAddress(format!(
                "{host} does not resolve and no local address was found"
            ))
        })?;
    tracing::warn!(address = %guess, "guessing the relay address from the local interfaces");
    Ok(RelayAddress {
        bind: guess,
        advertised: guess,
    })
}

fn unspecified(like: IpAddr) -> IpAddr {
    if like.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_documentation_addresses_are_not() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.77".parse().unwrap()));
        assert!(!is_public("127.0.0.1".parse().unwrap()));
    }
}
