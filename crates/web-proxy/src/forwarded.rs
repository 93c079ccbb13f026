//! Client addresses behind trusted reverse proxies (spec 6.4): `X-Forwarded-For` is believed only
//! when the peer is listed in `SNIKKET_TWEAK_TRUSTED_PROXIES`.

use ipnet::IpNet;
use std::net::IpAddr;

fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address of the real client: the peer itself, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy (nginx `real_ip_recursive on`).
pub fn client_ip(peer: IpAddr, xff: Option<&str>, nets: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, nets) {
        return peer;
    }
    let Some(xff) = xff else { return peer };
    let mut client = peer;
    for entry in xff.rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !trusted(client, nets) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The `X-Forwarded-For` sent to backends: the incoming chain plus the peer when the peer is
/// trusted, otherwise only the peer (a client cannot inject addresses).
pub fn forwarded_for(peer: IpAddr, xff: Option<&str>, nets: &[IpNet]) -> String {
    let peer = canonical(peer);
    match xff {
        Some(chain) if trusted(peer, nets) && !chain.trim().is_empty() => {
            format!("{}, {peer}", chain.trim())
        }
        _ => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &nets()), peer);
        assert_eq!(forwarded_for(peer, Some("1.2.3.4"), &nets()), "203.0.113.9");
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some("1.2.3.4, 198.51.100.7, 10.2.2.2"), &nets()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, None, &nets()), peer);
        assert_eq!(client_ip(peer, Some("garbage"), &nets()), peer);
        assert_eq!(
            forwarded_for(peer, Some("198.51.100.7"), &nets()),
            "198.51.100.7, 10.1.1.1"
        );
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(
            client_ip(mapped, Some("192.0.2.1"), &nets()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
