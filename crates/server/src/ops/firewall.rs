//! `firewall --ufw|--iptables|--nftables|--nixos`: the rules that open exactly the ports this
//! configuration listens on (spec 1.6 and 8.1), TURN relay range included, ready to paste.

use clap::Args;
use snikket_config::Config;
use std::fmt::Write;

/// Which firewall to print rules for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ufw allow …` commands.
    Ufw,
    /// `iptables`/`ip6tables -A INPUT …` commands.
    Iptables,
    /// An `nft` script adding accept rules to the `inet filter input` chain.
    Nftables,
    /// A NixOS `networking.firewall` snippet.
    Nixos,
}

/// Options of `firewall`: exactly one format.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct FirewallArgs {
    /// Print `ufw` commands (Debian, Ubuntu).
    #[arg(long)]
    pub ufw: bool,
    /// Print `iptables` and `ip6tables` commands.
    #[arg(long)]
    pub iptables: bool,
    /// Print an `nft` script.
    #[arg(long)]
    pub nftables: bool,
    /// Print a NixOS configuration snippet.
    #[arg(long)]
    pub nixos: bool,
}

impl FirewallArgs {
    /// The chosen format (clap guarantees exactly one flag).
    pub fn format(&self) -> Format {
        if self.ufw {
            Format::Ufw
        } else if self.iptables {
            Format::Iptables
        } else if self.nftables {
            Format::Nftables
        } else {
            Format::Nixos
        }
    }
}

/// Transport protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One port or port range to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Protocol.
    pub proto: Proto,
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
    /// What it is for, shown as a comment.
    pub purpose: &'static str,
}

impl Rule {
    fn one(proto: Proto, port: u16, purpose: &'static str) -> Rule {
        Rule {
            proto,
            first: port,
            last: port,
            purpose,
        }
    }

    /// Whether this is a range rather than one port.
    pub fn is_range(&self) -> bool {
        self.first != self.last
    }

    fn ports(&self, sep: &str) -> String {
        if self.is_range() {
            format!("{}{sep}{}", self.first, self.last)
        } else {
            self.first.to_string()
        }
    }
}

/// The ports the stack needs reachable from outside, in a stable order, without duplicates.
/// Loopback-only services (internal HTTP, portal, gRPC) are never listed.
pub fn rules(config: &Config) -> Vec<Rule> {
    let s = &config.server;
    let mut out = vec![
        Rule::one(
            Proto::Tcp,
            config.proxy.http_port,
            "HTTP (certificates, redirect to HTTPS)",
        ),
        Rule::one(
            Proto::Tcp,
            config.proxy.https_port,
            "HTTPS (web portal, file sharing)",
        ),
        Rule::one(Proto::Tcp, s.c2s_port, "XMPP clients"),
        Rule::one(
            Proto::Tcp,
            s.c2s_direct_tls_port,
            "XMPP clients (direct TLS)",
        ),
        Rule::one(Proto::Tcp, s.s2s_port, "XMPP federation"),
        Rule::one(Proto::Tcp, s.proxy65_port, "file transfer proxy"),
    ];
    // Only the built-in TURN server needs open ports here; an external one has its own firewall.
    if config.turn.enabled {
        let t = &config.turn;
        out.push(Rule::one(Proto::Tcp, t.port, "STUN/TURN"));
        out.push(Rule::one(Proto::Udp, t.port, "STUN/TURN"));
        if let Some(tls) = t.tls_port {
            out.push(Rule::one(Proto::Tcp, tls, "TURN over TLS"));
            out.push(Rule::one(Proto::Udp, tls, "TURN over DTLS"));
        }
        out.push(Rule {
            proto: Proto::Udp,
            first: t.min_port,
            last: t.max_port,
            purpose: "TURN relay (audio/video calls)",
        });
    }
    let mut seen = Vec::new();
    out.retain(|r| {
        let key = (r.proto, r.first, r.last);
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    out
}

/// The rules in the chosen format, with a header saying where they came from.
pub fn render(config: &Config, format: Format) -> String {
    let rules = rules(config);
    let mut o = String::new();
    let domain = &config.domain.unicode;
    match format {
        Format::Ufw => {
            let _ = writeln!(o, "# Snikket ({domain}): run these as root.");
            for r in &rules {
                let _ = writeln!(
                    o,
                    "ufw allow {}/{} comment 'Snikket {}'",
                    r.ports(":"),
                    r.proto.name(),
                    r.purpose
                );
            }
        }
        Format::Iptables => {
            let _ = writeln!(
                o,
                "# Snikket ({domain}): run these as root, then save them (e.g. netfilter-persistent save)."
            );
            let tools: &[&str] = if config.ipv6 {
                &["iptables", "ip6tables"]
            } else {
                &["iptables"]
            };
            for tool in tools {
                for r in &rules {
                    let _ = writeln!(
                        o,
                        "{tool} -A INPUT -p {} --dport {} -j ACCEPT -m comment --comment 'Snikket {}'",
                        r.proto.name(),
                        r.ports(":"),
                        r.purpose
                    );
                }
            }
        }
        Format::Nftables => {
            let _ = writeln!(
                o,
                "#!/usr/sbin/nft -f\n# Snikket ({domain}): adds accept rules to the inet filter input chain\n# (the one Debian's /etc/nftables.conf defines). Load with: nft -f FILE"
            );
            for proto in [Proto::Tcp, Proto::Udp] {
                let ports: Vec<String> = rules
                    .iter()
                    .filter(|r| r.proto == proto)
                    .map(|r| r.ports("-"))
                    .collect();
                if !ports.is_empty() {
                    let _ = writeln!(
                        o,
                        "add rule inet filter input {} dport {{ {} }} accept comment \"Snikket\"",
                        proto.name(),
                        ports.join(", ")
                    );
                }
            }
        }
        Format::Nixos => {
            let _ = writeln!(o, "# Snikket ({domain}): add to configuration.nix.");
            let _ = writeln!(o, "networking.firewall = {{");
            for proto in [Proto::Tcp, Proto::Udp] {
                let name = match proto {
                    Proto::Tcp => "TCP",
                    Proto::Udp => "UDP",
                };
                let singles: Vec<String> = rules
                    .iter()
                    .filter(|r| r.proto == proto && !r.is_range())
                    .map(|r| r.first.to_string())
                    .collect();
                let ranges: Vec<String> = rules
                    .iter()
                    .filter(|r| r.proto == proto && r.is_range())
                    .map(|r| format!("{{ from = {}; to = {}; }}", r.first, r.last))
                    .collect();
                if !singles.is_empty() {
                    let _ = writeln!(o, "  allowed{name}Ports = [ {} ];", singles.join(" "));
                }
                if !ranges.is_empty() {
                    let _ = writeln!(o, "  allowed{name}PortRanges = [ {} ];", ranges.join(" "));
                }
            }
            let _ = writeln!(o, "}};");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut vars = BTreeMap::new();
        vars.insert("SNIKKET_DOMAIN".to_string(), "chat.example.com".to_string());
        vars.insert(
            "SNIKKET_ADMIN_EMAIL".to_string(),
            "a@example.com".to_string(),
        );
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        Config::from_vars(&vars).unwrap()
    }

    #[test]
    fn defaults_match_snikkets_firewall_table() {
        let r = rules(&config(&[]));
        let tcp: Vec<u16> = r
            .iter()
            .filter(|r| r.proto == Proto::Tcp)
            .map(|r| r.first)
            .collect();
        assert_eq!(tcp, vec![80, 443, 5222, 5223, 5269, 5000, 3478, 5349]);
        let udp: Vec<(u16, u16)> = r
            .iter()
            .filter(|r| r.proto == Proto::Udp)
            .map(|r| (r.first, r.last))
            .collect();
        assert_eq!(udp, vec![(3478, 3478), (5349, 5349), (49152, 65535)]);
        // Loopback-only services never appear.
        assert!(!r.iter().any(|r| [5280, 5765, 5290].contains(&r.first)));
    }

    #[test]
    fn configured_ports_and_range_are_used() {
        let c = config(&[
            ("SNIKKET_TWEAK_HTTPS_PORT", "8443"),
            ("SNIKKET_TWEAK_TURNSERVER_PORT", "3480"),
            ("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "50000"),
            ("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", "50100"),
        ]);
        let ufw = render(&c, Format::Ufw);
        assert!(ufw.contains("ufw allow 8443/tcp comment"), "{ufw}");
        assert!(ufw.contains("ufw allow 3480/udp"), "{ufw}");
        assert!(ufw.contains("ufw allow 50000:50100/udp"), "{ufw}");
        assert!(!ufw.contains(" 443/tcp"), "{ufw}");

        let ipt = render(&c, Format::Iptables);
        assert!(
            ipt.contains("iptables -A INPUT -p udp --dport 50000:50100 -j ACCEPT"),
            "{ipt}"
        );
        assert!(
            ipt.contains("ip6tables -A INPUT -p tcp --dport 5222 -j ACCEPT"),
            "{ipt}"
        );

        let nft = render(&c, Format::Nftables);
        assert!(
            nft.contains("add rule inet filter input udp dport { 3480, 5349, 50000-50100 } accept"),
            "{nft}"
        );

        let nix = render(&c, Format::Nixos);
        assert!(
            nix.contains("allowedTCPPorts = [ 80 8443 5222 5223 5269 5000 3480 5349 ];"),
            "{nix}"
        );
        assert!(
            nix.contains("allowedUDPPortRanges = [ { from = 50000; to = 50100; } ];"),
            "{nix}"
        );
    }

    #[test]
    fn no_turn_ports_without_the_builtin_turn_server_and_no_ip6tables_without_ipv6() {
        let c = config(&[
            ("SNIKKET_TWEAK_TURNSERVER", "0"),
            ("SNIKKET_TWEAK_IPV6", "0"),
        ]);
        assert!(rules(&c)
            .iter()
            .all(|r| r.proto == Proto::Tcp && r.first != 3478));
        let ipt = render(&c, Format::Iptables);
        assert!(!ipt.contains("ip6tables"), "{ipt}");
        assert!(!render(&c, Format::Nixos).contains("UDP"));
    }

    #[test]
    fn duplicate_ports_are_listed_once() {
        let c = config(&[("SNIKKET_PROXY65_PORT", "5222")]);
        let n = rules(&c)
            .iter()
            .filter(|r| r.first == 5222 && r.proto == Proto::Tcp)
            .count();
        assert_eq!(n, 1);
    }
}
