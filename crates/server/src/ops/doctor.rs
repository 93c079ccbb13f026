//! `doctor`: checks what makes a new install fail, each finding with its fix in one sentence.
//!
//! 1. DNS (spec 8.1): A/AAAA for DOMAIN, and `groups.`/`share.` resolving to the same host.
//! 2. Ports: every public TCP port of the configured stack answers on the addresses DNS gives for
//!    DOMAIN (or those named with `--address`), and TURN answers a STUN binding request.
//! 3. The certificate in `letsencrypt/live/DOMAIN/`: present, readable, not close to expiry.
//!
//! Only the configured host is contacted (and the system's DNS resolver to look it up). Each check
//! is a function over plain data or an injected address, so tests run without the internet.

use crate::ops::firewall::{self, Proto};
use crate::ops::OpsError;
use clap::Args;
use snikket_config::Config;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Options of `doctor`.
#[derive(Args, Debug, Clone, Default)]
pub struct DoctorArgs {
    /// Skip the DNS checks.
    #[arg(long)]
    pub no_dns: bool,
    /// Check the ports on this address instead of DOMAIN's DNS records (repeatable).
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<IpAddr>,
    /// Seconds to wait for each port.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    pub timeout: u64,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works.
    Ok,
    /// Works now but will cause trouble.
    Warn,
    /// Broken.
    Fail,
}

/// One result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What was found.
    pub what: String,
    /// The fix, in one sentence, for anything not `Ok`.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Ok,
            what: what.into(),
            fix: None,
        }
    }
    fn warn(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Addresses DNS gave for one name; an `Err` is a lookup failure other than "no such record".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// A and AAAA records (after following CNAMEs).
    pub addresses: Vec<IpAddr>,
    /// Why the lookup failed, if it did.
    pub error: Option<String>,
}

/// The three names the stack needs: DOMAIN, groups.DOMAIN and share.DOMAIN (unless file sharing
/// is served on DOMAIN itself).
pub fn names(config: &Config) -> Vec<String> {
    let mut v = vec![config.domain.ascii.clone(), config.groups_domain()];
    if !config.server.share_on_main_domain {
        v.push(config.share_domain());
    }
    v
}

/// Looks the names up with the system's resolver configuration (hickory, so it works in a static
/// binary without NSS).
pub async fn resolve(names: &[String]) -> BTreeMap<String, Lookup> {
    let mut out = BTreeMap::new();
    let resolver = match hickory_resolver::TokioResolver::builder_tokio() {
        Ok(b) => b.build(),
        Err(e) => {
            for n in names {
                out.insert(
                    n.clone(),
                    Lookup {
                        addresses: Vec::new(),
                        error: Some(format!("no DNS resolver: {e}")),
                    },
                );
            }
            return out;
        }
    };
    for name in names {
        let fqdn = format!("{name}.");
        let mut lookup = Lookup::default();
        match resolver.ipv4_lookup(fqdn.as_str()).await {
            Ok(r) => lookup.addresses.extend(r.iter().map(|a| IpAddr::V4(a.0))),
            Err(e) if e.is_no_records_found() => {}
            Err(e) => lookup.error = Some(e.to_string()),
        }
        match resolver.ipv6_lookup(fqdn.as_str()).await {
            Ok(r) => lookup.addresses.extend(r.iter().map(|a| IpAddr::V6(a.0))),
            Err(e) if e.is_no_records_found() => {}
            Err(e) => lookup.error = lookup.error.or(Some(e.to_string())),
        }
        out.insert(name.clone(), lookup);
    }
    out
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Judges the DNS answers.
pub fn check_dns(config: &Config, answers: &BTreeMap<String, Lookup>) -> Vec<Finding> {
    let mut out = Vec::new();
    let domain = &config.domain.ascii;
    let empty = Lookup::default();
    let main = answers.get(domain).unwrap_or(&empty);
    let has_v4 = main.addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = main.addresses.iter().any(IpAddr::is_ipv6);
    if let Some(e) = &main.error {
        out.push(Finding::fail(
            format!("DNS lookup of {domain} failed: {e}"),
            "Check that this host can reach its DNS resolver (/etc/resolv.conf) and try again.",
        ));
    } else if main.addresses.is_empty() {
        out.push(Finding::fail(
            format!("{domain} has no A or AAAA record"),
            format!("Create an A record for {domain} pointing at this server's public IPv4 address (and an AAAA record for IPv6)."),
        ));
    } else {
        out.push(Finding::ok(format!(
            "{domain} resolves to {}",
            list(&main.addresses)
        )));
        if !has_v4 {
            out.push(Finding::warn(
                format!("{domain} has no A record (IPv6 only)"),
                format!(
                    "Add an A record for {domain} so IPv4-only apps and servers can reach you."
                ),
            ));
        }
        if let Some(bad) = main.addresses.iter().find(|a| is_private(a)) {
            out.push(Finding::warn(
                format!("{domain} resolves to the non-public address {bad}"),
                format!("Point {domain} at the public address of this server (or its router) so apps outside your network can connect."),
            ));
        }
        let _ = has_v6;
    }
    for sub in names(config).into_iter().skip(1) {
        let l = answers.get(&sub).unwrap_or(&empty);
        if l.addresses.is_empty() {
            out.push(Finding::fail(
                format!("{sub} does not resolve"),
                format!("Create a CNAME record for {sub} pointing to {domain}."),
            ));
        } else if !main.addresses.is_empty()
            && !l.addresses.iter().all(|a| main.addresses.contains(a))
        {
            out.push(Finding::warn(
                format!(
                    "{sub} resolves to {} but {domain} to {}",
                    list(&l.addresses),
                    list(&main.addresses)
                ),
                format!(
                    "Make {sub} a CNAME record pointing to {domain} so both reach this server."
                ),
            ));
        } else {
            out.push(Finding::ok(format!(
                "{sub} resolves to {}",
                list(&l.addresses)
            )));
        }
    }
    out
}

fn is_private(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Which container serves a port, for the fix sentence.
fn container_for(config: &Config, port: u16) -> &'static str {
    if port == config.proxy.http_port || port == config.proxy.https_port {
        "snikket-proxy"
    } else if config.turn.enabled
        && (port == config.turn.port || Some(port) == config.turn.tls_port)
    {
        "snikket-turn"
    } else {
        "snikket"
    }
}

/// A STUN binding request (RFC 8489 section 6) and whether a matching success response came back.
async fn stun_answers(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bad bind address".to_string())?;
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let mut req = [0u8; 20];
    req[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    req[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    let txid: [u8; 12] = rand_txid();
    req[8..20].copy_from_slice(&txid);
    sock.send_to(&req, addr).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let wait = async {
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
            if from == addr && n >= 20 && buf[0..2] == [0x01, 0x01] && buf[8..20] == txid {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or_else(|_| Err("no answer".into()))
}

fn rand_txid() -> [u8; 12] {
    // Unpredictability is not needed here, only distinctness between runs.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut t = [0u8; 12];
    t.copy_from_slice(&(nanos ^ u128::from(std::process::id())).to_le_bytes()[..12]);
    t
}

/// Connects to every public TCP port on each target, and sends STUN to the TURN port.
pub async fn check_ports(config: &Config, targets: &[IpAddr], timeout: Duration) -> Vec<Finding> {
    let mut out = Vec::new();
    if targets.is_empty() {
        out.push(Finding::fail(
            "no address to test the ports on",
            "Fix the DNS records above, or pass --address with this server's public address.",
        ));
        return out;
    }
    let rules = firewall::rules(config);
    for ip in targets {
        for r in rules.iter().filter(|r| !r.is_range()) {
            let addr = SocketAddr::new(*ip, r.first);
            let proto = match r.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            let result = match r.proto {
                Proto::Tcp => {
                    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await
                    {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no answer".to_string()),
                    }
                }
                // Only the plain STUN port speaks STUN over UDP; DTLS ports are not probed.
                Proto::Udp if r.first == config.turn.port => stun_answers(addr, timeout).await,
                Proto::Udp => continue,
            };
            match result {
                Ok(()) => out.push(Finding::ok(format!("{} {}/{proto} answers ({})", ip, r.first, r.purpose))),
                Err(e) => out.push(Finding::fail(
                    format!("{} {}/{proto} ({}) does not answer: {e}", ip, r.first, r.purpose),
                    format!(
                        "Check that the {} container is running (docker ps) and that the firewall allows {}/{proto} (docker exec snikket firewall --ufw prints the rules).",
                        container_for(config, r.first),
                        r.first
                    ),
                )),
            }
        }
    }
    out
}

/// Judges the certificate files at `now` (Unix seconds).
pub fn check_certificate(config: &Config, now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let chain = config.cert_live_dir().join("fullchain.pem");
    let logs = "Read docker logs snikket-certs: the usual causes are missing DNS records (see above) or port 80 not reachable from the internet.";
    match std::fs::read(&chain) {
        Err(_) => out.push(Finding::fail(format!("no certificate at {}", chain.display()), logs)),
        Ok(pem) => match snikket_runtime::tls::not_after(&pem) {
            None => out.push(Finding::fail(
                format!("{} is not a readable certificate", chain.display()),
                "Delete the damaged live directory and restart snikket-certs to obtain a new certificate.",
            )),
            Some(t) => {
                let days = (t - now).div_euclid(86_400);
                if t <= now {
                    out.push(Finding::fail(
                        format!("the certificate expired {} days ago", -days),
                        format!("Renewal is failing. {logs}"),
                    ));
                } else if days < 14 {
                    out.push(Finding::warn(
                        format!("the certificate expires in {days} days"),
                        format!("Renewal should have happened 30 days before expiry. {logs}"),
                    ));
                } else {
                    out.push(Finding::ok(format!("the certificate is valid for {days} more days")));
                }
            }
        },
    }
    if config.has_errors_path().exists() {
        out.push(Finding::warn("the last certificate request failed", logs));
    }
    out
}

/// Formats findings for a terminal, with a closing count.
pub fn render(findings: &[Finding]) -> String {
    let mut o = String::new();
    for f in findings {
        let tag = match f.severity {
            Severity::Ok => "  ok",
            Severity::Warn => "warn",
            Severity::Fail => "FAIL",
        };
        let _ = writeln!(o, "[{tag}] {}", f.what);
        if let Some(fix) = &f.fix {
            let _ = writeln!(o, "       fix: {fix}");
        }
    }
    let fails = findings
        .iter()
        .filter(|f| f.severity == Severity::Fail)
        .count();
    let warns = findings
        .iter()
        .filter(|f| f.severity == Severity::Warn)
        .count();
    let _ = writeln!(o, "{fails} problems, {warns} warnings");
    o
}

/// The command: prints every finding; `Ok(false)` when something fails.
pub async fn main(config: &Config, args: &DoctorArgs) -> Result<bool, OpsError> {
    let mut findings = Vec::new();
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut targets = args.addresses.clone();
    if !args.no_dns {
        let answers = resolve(&names(config)).await;
        findings.extend(check_dns(config, &answers));
        if targets.is_empty() {
            if let Some(l) = answers.get(&config.domain.ascii) {
                targets = l
                    .addresses
                    .iter()
                    .copied()
                    .filter(|a| config.ipv6 || a.is_ipv4())
                    .collect();
            }
        }
    }
    findings.extend(check_ports(config, &targets, timeout).await);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    findings.extend(check_certificate(config, now));
    print!("{}", render(&findings));
    Ok(!findings.iter().any(|f| f.severity == Severity::Fail))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn answers(entries: &[(&str, &[&str])]) -> BTreeMap<String, Lookup> {
        entries
            .iter()
            .map(|(n, a)| {
                (
                    n.to_string(),
                    Lookup {
                        addresses: a.iter().map(|s| s.parse().unwrap()).collect(),
                        error: None,
                    },
                )
            })
            .collect()
    }

    fn fails(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.severity == Severity::Fail)
            .map(|f| f.what.as_str())
            .collect()
    }

    #[test]
    fn complete_dns_passes() {
        let c = config(&[]);
        let a = answers(&[
            ("chat.example.com", &["203.0.113.5", "2001:db8::5"]),
            ("groups.chat.example.com", &["203.0.113.5"]),
            ("share.chat.example.com", &["203.0.113.5", "2001:db8::5"]),
        ]);
        let f = check_dns(&c, &a);
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:?}");
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn missing_records_each_get_a_fix() {
        let c = config(&[]);
        let f = check_dns(&c, &answers(&[("chat.example.com", &["203.0.113.5"])]));
        assert_eq!(
            fails(&f),
            vec![
                "groups.chat.example.com does not resolve",
                "share.chat.example.com does not resolve"
            ]
        );
        assert!(f
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .all(|f| f.fix.as_deref().is_some_and(|x| x.contains("CNAME"))));

        let f = check_dns(&c, &BTreeMap::new());
        assert_eq!(fails(&f)[0], "chat.example.com has no A or AAAA record");
        // With file sharing on the main domain, share. is not needed.
        let c = config(&[("SNIKKET_TWEAK_SHARE_DOMAIN", "1")]);
        assert_eq!(names(&c).len(), 2);
    }

    #[test]
    fn mismatches_private_addresses_and_ipv6_only_are_warnings() {
        let c = config(&[]);
        let f = check_dns(
            &c,
            &answers(&[
                ("chat.example.com", &["2001:db8::5"]),
                ("groups.chat.example.com", &["2001:db8::6"]),
                ("share.chat.example.com", &["2001:db8::5"]),
            ]),
        );
        assert!(fails(&f).is_empty(), "{f:?}");
        let warns: Vec<_> = f
            .iter()
            .filter(|f| f.severity == Severity::Warn)
            .map(|f| f.what.clone())
            .collect();
        assert_eq!(warns.len(), 2, "{warns:?}");
        let f = check_dns(&c, &answers(&[("chat.example.com", &["192.168.1.10"])]));
        assert!(f
            .iter()
            .any(|f| f.severity == Severity::Warn && f.what.contains("non-public")));
    }

    #[tokio::test]
    async fn ports_that_answer_and_ports_that_do_not() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = open.local_addr().unwrap().port();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = open_port.to_string();
        let q = closed_port.to_string();
        let c = config(&[
            ("SNIKKET_TWEAK_HTTPS_PORT", p.as_str()),
            ("SNIKKET_TWEAK_C2S_PORT", q.as_str()),
            ("SNIKKET_TWEAK_TURNSERVER", "0"),
        ]);
        let f = check_ports(&c, &["127.0.0.1".parse().unwrap()], Duration::from_secs(2)).await;
        let https = f
            .iter()
            .find(|f| f.what.contains(&format!(":{p}")) || f.what.contains(&format!(" {p}/tcp")))
            .unwrap();
        assert_eq!(https.severity, Severity::Ok, "{f:?}");
        let c2s = f
            .iter()
            .find(|f| f.what.contains(&format!(" {q}/tcp")))
            .unwrap();
        assert_eq!(c2s.severity, Severity::Fail);
        assert!(
            c2s.fix.as_deref().unwrap().contains("snikket container"),
            "{c2s:?}"
        );
        assert!(check_ports(&c, &[], Duration::from_secs(1)).await[0].severity == Severity::Fail);
    }

    #[tokio::test]
    async fn stun_probe_needs_a_real_answer() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            if let Ok((n, from)) = server.recv_from(&mut buf).await {
                let mut resp = buf[..n.min(20)].to_vec();
                resp[0..2].copy_from_slice(&[0x01, 0x01]);
                let _ = server.send_to(&resp, from).await;
            }
        });
        assert!(stun_answers(addr, Duration::from_secs(2)).await.is_ok());
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(
            stun_answers(silent.local_addr().unwrap(), Duration::from_millis(300))
                .await
                .is_err()
        );
    }

    #[test]
    fn certificate_missing_valid_and_expiring() {
        let dir = snikket_testkit::temp_dir();
        let d = dir.path().display().to_string();
        let c = config(&[("SNIKKET_TWEAK_DATA_DIR", d.as_str())]);
        let f = check_certificate(&c, 0);
        assert_eq!(f[0].severity, Severity::Fail);
        assert!(f[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("docker logs snikket-certs"));

        snikket_testkit::TestCa::new().write_live_dir(&c.cert_live_dir(), &["chat.example.com"]);
        let pem = std::fs::read(c.cert_live_dir().join("fullchain.pem")).unwrap();
        let end = snikket_runtime::tls::not_after(&pem).unwrap();
        assert_eq!(
            check_certificate(&c, end - 40 * 86_400)[0].severity,
            Severity::Ok
        );
        assert_eq!(
            check_certificate(&c, end - 5 * 86_400)[0].severity,
            Severity::Warn
        );
        assert_eq!(check_certificate(&c, end + 1)[0].severity, Severity::Fail);

        std::fs::write(c.cert_live_dir().join("fullchain.pem"), "garbage").unwrap();
        assert!(check_certificate(&c, 0)[0]
            .what
            .contains("not a readable certificate"));
        std::fs::write(c.has_errors_path(), "").unwrap();
        assert!(check_certificate(&c, 0)
            .iter()
            .any(|f| f.what.contains("last certificate request failed")));
    }

    #[test]
    fn render_counts_problems() {
        let out = render(&[Finding::ok("a"), Finding::fail("b", "do c")]);
        assert_eq!(
            out,
            "[  ok] a\n[FAIL] b\n       fix: do c\n1 problems, 0 warnings\n"
        );
    }
}
