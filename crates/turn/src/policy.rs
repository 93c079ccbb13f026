//! Which peers the relay may talk to: deny by default everything that is not a public unicast
//! address (CVE-2020-26262, CVE-2026-27624), with an operator allow-list.
//!
//! IPv6 forms that embed an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the embedded IPv4 address, so `::ffff:127.0.0.1`
//! is loopback like `127.0.0.1`.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The relay's peer filter.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allowed: Vec<IpNet>,
}

impl PeerPolicy {
    /// A policy allowing only public unicast addresses plus `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        PeerPolicy { allowed }
    }

    /// Whether the relay may exchange traffic with `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let canonical = canonical(ip);
        if self
            .allowed
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
        {
            return true;
        }
        !denied(ip)
    }
}

/// The IPv4 address an IPv6 address stands for, if it embeds one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let last4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (SIIT translated).
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(last4);
    }
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some(last4);
    }
    // ::a.b.c.d (deprecated compatible form), including :: and ::1.
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some(last4);
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last4);
    }
    // 6to4 2002:AABB:CCDD::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => {
            if v6.is_unspecified() || v6.is_loopback() {
                return true;
            }
            match embedded_v4(v6) {
                Some(v4) => denied_v4(v4),
                None => denied_v6(v6),
            }
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn denied_v4(ip: Ipv4Addr) -> bool {
    const DENY: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0
        ([10, 0, 0, 0], 8),      // RFC 1918
        ([100, 64, 0, 0], 10),   // CGNAT (RFC 6598)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, cloud metadata
        ([172, 16, 0, 0], 12),   // RFC 1918
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // TEST-NET-1
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // RFC 1918
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // TEST-NET-2
        ([203, 0, 113, 0], 24),  // TEST-NET-3
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, limited broadcast
    ];
    DENY.iter().any(|(net, p)| in_v4(ip, *net, *p))
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn denied_v6(ip: Ipv6Addr) -> bool {
    const DENY: &[([u16; 8], u32)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96), // unspecified, loopback, compatible
        ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), // mapped
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // local-use NAT64
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments (Teredo, ORCHID…)
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), // SRv6 SIDs
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique local
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
    ];
    DENY.iter().any(|(net, p)| in_v6(ip, *net, *p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form the CVEs used, plus the private and special ranges.
    pub(crate) const DENIED: &[&str] = &[
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.9",
        "198.18.0.1",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "::127.0.0.1",
        "::ffff:0:127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "2002:c0a8:101::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "3fff::1",
        "2001::1",
    ];

    #[test]
    fn denies_every_special_form() {
        let p = PeerPolicy::default();
        for s in DENIED {
            let ip: IpAddr = s.parse().unwrap();
            assert!(!p.allows(ip), "{s} must be denied");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let p = PeerPolicy::default();
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2606:4700::1111",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert!(p.allows(ip), "{s} must be allowed");
        }
    }

    #[test]
    fn allow_list_covers_mapped_forms() {
        let p = PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(p.allows("127.0.0.1".parse().unwrap()));
        assert!(p.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.allows("127.0.0.2".parse().unwrap()));
        assert!(!p.allows("::1".parse().unwrap()));
        let p = PeerPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(p.allows("10.9.9.9".parse().unwrap()));
        assert!(!p.allows("192.168.0.1".parse().unwrap()));
    }
}
