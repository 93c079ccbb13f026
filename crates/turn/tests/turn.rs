//! Starts the real `snikket-turn` binary on 127.0.0.1 and drives it with coturn's
//! `turnutils_stunclient` / `turnutils_uclient` (Debian package `coturn`) and with raw STUN
//! packets for the negative cases (denied peers, bad credentials, exhausted ports, malformed input).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use hmac::{Hmac, Mac};
use snikket_testkit::{free_port, wait_for_port, Child, TestCa};
use snikket_turn::stun::{self, attr, method, Builder, Class, Integrity, Message};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "integration-test-secret";
const DOMAIN: &str = "example.com";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Finds a coturn tool or fails the test saying what to install.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: install the Debian package `coturn` (apt-get install -y coturn)");
}

struct Turn {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: u16,
    grpc_port: u16,
    log: PathBuf,
}

impl Turn {
    fn command(dir: &Path, extra: &[(&str, String)]) -> (Command, u16, u16, u16) {
        let port = free_port();
        let tls_port = free_port();
        let grpc_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snikket-turn"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SNIKKET_DOMAIN", DOMAIN)
            .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
            .env("SNIKKET_LOGLEVEL", "debug")
            .env("SNIKKET_TWEAK_DATA_DIR", dir)
            .env("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1")
            .env("SNIKKET_TWEAK_TURNSERVER_PORT", port.to_string())
            .env("SNIKKET_TWEAK_TURNSERVER_TLS_PORT", tls_port.to_string())
            .env("SNIKKET_TWEAK_TURN_GRPC_PORT", grpc_port.to_string())
            .env("SNIKKET_TWEAK_TURNSERVER_SECRET", SECRET)
            .env("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "50000")
            .env("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", "50999");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        (cmd, port, tls_port, grpc_port)
    }

    fn start(extra: &[(&str, String)]) -> Turn {
        let dir = snikket_testkit::temp_dir();
        let (mut cmd, port, tls_port, grpc_port) = Turn::command(dir.path(), extra);
        let log = dir.path().join("turn.log");
        let f = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        let child = Child::spawn("snikket-turn", cmd);
        let turn = Turn {
            child: Some(child),
            dir,
            port,
            tls_port,
            grpc_port,
            log,
        };
        wait_for_port(turn.addr(), Duration::from_secs(30));
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], turn.grpc_port)),
            Duration::from_secs(30),
        );
        turn
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process must still be running (no panic, no crash).
    fn assert_alive(&mut self) {
        let status = self.child.as_mut().unwrap().try_wait();
        assert!(
            status.is_none(),
            "snikket-turn exited: {status:?}\n{}",
            self.log()
        );
    }
}

/// Runs `cmd` with output in a file, killing it after `limit`. Returns (success, output).
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::from(out.reopen().unwrap()));
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    (status.is_some_and(|s| s.success()), text)
}

/// The final "tot_send_msgs=N, tot_recv_msgs=M" of a uclient run.
fn uclient_totals(output: &str) -> Option<(u64, u64)> {
    let line = output
        .lines()
        .rfind(|l| l.contains("start_mclient: tot_send_msgs="))?;
    let num = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((num("tot_send_msgs=")?, num("tot_recv_msgs=")?))
}

fn uclient(port: u16, secret: &str, opts: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(tool("turnutils_uclient"));
    cmd.arg("-p")
        .arg(port.to_string())
        .args(["-W", secret, "-u", "alice"])
        .args(opts)
        .arg("127.0.0.1");
    let (_, out) = run_bounded(cmd, Duration::from_secs(60));
    let ok = matches!(uclient_totals(&out), Some((s, r)) if s > 0 && s == r);
    (ok, out)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// TURN REST credentials expiring `ttl` seconds from now, computed independently of the server.
fn rest_credentials(secret: &str, ttl: i64, user: &str) -> (String, String) {
    let username = format!("{}:{user}", unix_now() + ttl);
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// A raw STUN/TURN client over UDP on loopback.
struct Raw {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    realm: String,
    nonce: String,
}

fn tid() -> [u8; 12] {
    rand::random()
}

impl Raw {
    fn new(server: SocketAddr, username: &str, password: &str) -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Raw {
            sock,
            server,
            username: username.into(),
            key: stun::long_term_key(username, DOMAIN, password),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    fn exchange(&self, req: &[u8]) -> Vec<u8> {
        self.sock.send_to(req, self.server).unwrap();
        self.recv().expect("no response from snikket-turn")
    }

    fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    /// Sends an authenticated request (fetching realm and nonce first) and returns the error
    /// code (0 on success) and the response bytes.
    fn request(&mut self, m: u16, add: impl Fn(&mut Builder)) -> (u16, Vec<u8>) {
        if self.nonce.is_empty() {
            let mut b = Builder::new(m, Class::Request, tid());
            add(&mut b);
            let resp = self.exchange(&b.finish());
            let msg = Message::decode(&resp).unwrap();
            assert_eq!(msg.error_code().unwrap().map(|c| c.0), Some(401));
            self.realm = msg.text(attr::REALM).unwrap().unwrap().into();
            self.nonce = msg.text(attr::NONCE).unwrap().unwrap().into();
            assert_eq!(self.realm, DOMAIN);
        }
        let t = tid();
        let mut b = Builder::new(m, Class::Request, t);
        add(&mut b);
        b.add(attr::USERNAME, self.username.as_bytes())
            .add(attr::REALM, self.realm.as_bytes())
            .add(attr::NONCE, self.nonce.as_bytes())
            .add_integrity(&self.key)
            .add_fingerprint();
        let resp = self.exchange(&b.finish());
        let msg = Message::decode(&resp).unwrap();
        assert_eq!(msg.tid, t);
        assert_eq!(msg.method, m);
        let code = match msg.class {
            Class::Success => 0,
            Class::Error => msg.error_code().unwrap().unwrap().0,
            other => panic!("unexpected class {other:?}"),
        };
        if !matches!(code, 400 | 401 | 420 | 438) {
            assert_eq!(
                msg.check_integrity(&self.key),
                Integrity::Sha1,
                "response must be signed"
            );
        }
        (code, resp)
    }

    fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let (code, resp) = self.request(method::ALLOCATE, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        if code != 0 {
            return Err(code);
        }
        let msg = Message::decode(&resp).unwrap();
        Ok(msg.xor_addr(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap())
    }

    fn permission(&mut self, peer: SocketAddr) -> u16 {
        self.request(method::CREATE_PERMISSION, |b| {
            b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
        .0
    }

    fn channel_bind(&mut self, ch: u16, peer: SocketAddr) -> u16 {
        self.request(method::CHANNEL_BIND, |b| {
            b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer)
                .add_u32(attr::CHANNEL_NUMBER, u32::from(ch) << 16);
        })
        .0
    }

    fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut b = Builder::new(method::SEND, Class::Indication, tid());
        b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer)
            .add(attr::DATA, data);
        self.sock.send_to(&b.finish(), self.server).unwrap();
    }

    fn binding_works(&self) -> bool {
        let t = tid();
        let req = Builder::new(method::BINDING, Class::Request, t).finish();
        self.sock.send_to(&req, self.server).unwrap();
        let Some(resp) = self.recv() else {
            return false;
        };
        let msg = Message::decode(&resp).unwrap();
        msg.tid == t
            && msg.xor_addr(attr::XOR_MAPPED_ADDRESS).unwrap()
                == Some(self.sock.local_addr().unwrap())
    }
}

#[test]
fn stun_binding_with_turnutils_stunclient() {
    let stunclient = tool("turnutils_stunclient");
    let mut turn = Turn::start(&[]);
    let mut cmd = Command::new(stunclient);
    cmd.arg("-p").arg(turn.port.to_string()).arg("127.0.0.1");
    let (ok, out) = run_bounded(cmd, Duration::from_secs(30));
    assert!(ok, "stunclient failed:\n{out}");
    assert!(
        out.contains("UDP reflexive addr: 127.0.0.1:"),
        "no reflexive address in:\n{out}"
    );
    turn.assert_alive();
}

#[test]
fn relayed_traffic_between_two_uclients_udp_tcp_channels_and_send() {
    tool("turnutils_uclient");
    let mut turn = Turn::start(&[(
        "SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS",
        "127.0.0.1".to_string(),
    )]);
    let mut total_sent = 0;
    for opts in [
        // Channel data over UDP, RTP only.
        &["-y", "-c", "-n", "20", "-m", "2", "-e", "127.0.0.1"][..],
        // Send/Data indications over UDP.
        &["-y", "-c", "-s", "-n", "20", "-m", "2", "-e", "127.0.0.1"][..],
        // RTP + RTCP: EVEN-PORT with a reservation, then RESERVATION-TOKEN.
        &["-y", "-n", "20", "-m", "1", "-e", "127.0.0.1"][..],
        // Channel data over TCP.
        &["-t", "-y", "-c", "-n", "20", "-m", "2", "-e", "127.0.0.1"][..],
    ] {
        let (ok, out) = uclient(turn.port, SECRET, opts);
        assert!(ok, "uclient {opts:?} did not get every packet back:\n{out}");
        let (sent, _) = uclient_totals(&out).unwrap();
        assert!(sent >= 20, "{opts:?}: too few packets: {sent}");
        total_sent += sent;
    }
    turn.assert_alive();

    // Counters over gRPC, which refuses calls without the internal secret.
    let grpc_secret = std::fs::read_to_string(turn.dir.path().join("internal/grpc-secret"))
        .unwrap()
        .trim()
        .to_string();
    let url = format!("http://127.0.0.1:{}", turn.grpc_port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use snikket_rpc::snikket::turn::v1::turn_status_client::TurnStatusClient;
        use snikket_rpc::snikket::turn::v1::GetStatsRequest;
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut anon = TurnStatusClient::new(channel.clone());
        let err = anon.get_stats(GetStatsRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let header = snikket_rpc::SecretHeader::new(&grpc_secret).unwrap();
        let mut client = TurnStatusClient::with_interceptor(channel, header);
        let stats = client
            .get_stats(GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        // Each message goes client → own relay → other relay → other client.
        assert!(stats.allocations_total >= 8, "{stats:?}");
        assert!(stats.packets_to_peers >= total_sent, "{stats:?}");
        assert!(stats.packets_from_peers >= total_sent, "{stats:?}");
        assert!(stats.bytes_to_peers >= total_sent * 100, "{stats:?}");
        assert_eq!((stats.port_min, stats.port_max), (50000, 50999));
        assert_eq!(stats.calls_supported, 250);
    });
}

#[test]
fn turn_over_tls_starts_once_a_certificate_appears() {
    tool("turnutils_uclient");
    let mut turn = Turn::start(&[(
        "SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS",
        "127.0.0.1".to_string(),
    )]);
    let opts = [
        "-S",
        "-t",
        "-y",
        "-c",
        "-n",
        "10",
        "-m",
        "1",
        "-e",
        "127.0.0.1",
    ];
    let (ok, out) = uclient(turn.tls_port, SECRET, &opts);
    assert!(!ok, "tls must not work without a certificate:\n{out}");
    let live = turn.dir.path().join("letsencrypt/live").join(DOMAIN);
    TestCa::new().write_live_dir(&live, &[DOMAIN]);
    // The certificate files are polled every 10 s; no restart is needed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, out) = uclient(turn.tls_port, SECRET, &opts);
        if ok {
            turn.assert_alive();
            return;
        }
        last = out;
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("tls relay never worked after the certificate appeared:\n{last}");
}

#[test]
fn wrong_and_expired_credentials_get_401() {
    tool("turnutils_uclient");
    let mut turn = Turn::start(&[(
        "SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS",
        "127.0.0.1".to_string(),
    )]);
    let (ok, out) = uclient(
        turn.port,
        "not-the-secret",
        &["-y", "-c", "-n", "5", "-m", "1", "-e", "127.0.0.1"],
    );
    assert!(!ok, "a forged secret must not relay:\n{out}");
    assert!(
        out.contains("error 401") || out.contains("Cannot complete Allocation"),
        "{out}"
    );

    let (user, _) = rest_credentials(SECRET, 3600, "bob");
    let mut forged = Raw::new(turn.addr(), &user, "d3JvbmcgcGFzc3dvcmQ=");
    assert_eq!(forged.allocate(), Err(401));
    let (user, pass) = rest_credentials("another-secret", 3600, "bob");
    let mut other = Raw::new(turn.addr(), &user, &pass);
    assert_eq!(other.allocate(), Err(401));
    let (user, pass) = rest_credentials(SECRET, -10, "bob");
    let mut expired = Raw::new(turn.addr(), &user, &pass);
    assert_eq!(expired.allocate(), Err(401));
    let mut malformed = Raw::new(turn.addr(), "bob", "x");
    assert_eq!(malformed.allocate(), Err(401));
    // A forged nonce is stale (438), then the right credentials work.
    let (user, pass) = rest_credentials(SECRET, 3600, "bob");
    let mut good = Raw::new(turn.addr(), &user, &pass);
    good.nonce = "00000000000000000000000000000000000000000000".into();
    good.realm = DOMAIN.into();
    let (code, resp) = good.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code, 438);
    let msg = Message::decode(&resp).unwrap();
    good.nonce = msg.text(attr::NONCE).unwrap().unwrap().into();
    let relayed = good.allocate().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!((50000..=50999).contains(&relayed.port()));
    // UDP relays only.
    let (user, pass) = rest_credentials(SECRET, 3600, "carol");
    let mut tcp = Raw::new(turn.addr(), &user, &pass);
    let (code, _) = tcp.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(code, 442);
    turn.assert_alive();
}

#[test]
fn denied_peers_get_403_and_sends_to_them_are_dropped() {
    // No allow-list: loopback peers are denied like every other special address.
    let mut turn = Turn::start(&[]);
    let (user, pass) = rest_credentials(SECRET, 3600, "dave");
    let mut c = Raw::new(turn.addr(), &user, &pass);
    c.allocate().unwrap();
    let denied = [
        "0.0.0.0:3478",
        "127.0.0.1:3478",
        "127.0.0.2:80",
        "10.0.0.1:80",
        "172.16.5.4:80",
        "192.168.1.1:80",
        "100.64.0.1:80",
        "169.254.169.254:80",
        "224.0.0.251:5353",
        "255.255.255.255:9",
        "192.0.2.1:80",
        "198.51.100.1:80",
        "203.0.113.1:80",
        "[::]:3478",
        "[::1]:3478",
        "[::ffff:127.0.0.1]:3478",
        "[::ffff:10.0.0.1]:80",
        "[::ffff:169.254.169.254]:80",
        "[::127.0.0.1]:80",
        "[64:ff9b::7f00:1]:80",
        "[2002:7f00:1::1]:80",
        "[fc00::1]:80",
        "[fd00::1]:80",
        "[fe80::1]:80",
        "[fec0::1]:80",
        "[ff02::1]:80",
        "[2001:db8::1]:80",
    ];
    for p in denied {
        let peer: SocketAddr = p.parse().unwrap();
        assert_eq!(c.permission(peer), 403, "CreatePermission to {p}");
        assert_eq!(c.channel_bind(0x4001, peer), 403, "ChannelBind to {p}");
    }
    // A public peer is accepted (a permission sends no packet).
    assert_eq!(c.permission("8.8.8.8:53".parse().unwrap()), 0);
    // A Send indication to a loopback peer never arrives.
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    target
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.send_indication(target.local_addr().unwrap(), b"should not arrive");
    let mut buf = [0u8; 64];
    assert!(
        target.recv_from(&mut buf).is_err(),
        "denied peer received relayed data"
    );
    assert!(c.binding_works());
    turn.assert_alive();
}

#[test]
fn allowed_peer_receives_data_both_ways() {
    let mut turn = Turn::start(&[(
        "SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS",
        "127.0.0.1".to_string(),
    )]);
    let (user, pass) = rest_credentials(SECRET, 3600, "erin");
    let mut c = Raw::new(turn.addr(), &user, &pass);
    let relayed = c.allocate().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert_eq!(c.permission(peer_addr), 0);
    c.send_indication(peer_addr, b"hello peer");
    let mut buf = [0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello peer");
    assert_eq!(from, relayed);
    peer.send_to(b"hello client", relayed).unwrap();
    let data = c.recv().unwrap();
    let msg = Message::decode(&data).unwrap();
    assert_eq!((msg.method, msg.class), (method::DATA, Class::Indication));
    assert_eq!(msg.get(attr::DATA), Some(&b"hello client"[..]));
    assert_eq!(
        msg.xor_addr(attr::XOR_PEER_ADDRESS).unwrap(),
        Some(peer_addr)
    );
    // Channel data both ways.
    assert_eq!(c.channel_bind(0x4000, peer_addr), 0);
    let mut frame = Vec::new();
    stun::encode_channel_data(0x4000, b"via channel", false, &mut frame);
    c.sock.send_to(&frame, c.server).unwrap();
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"via channel");
    peer.send_to(b"back", relayed).unwrap();
    let data = c.recv().unwrap();
    assert_eq!(
        stun::decode_channel_data(&data).unwrap(),
        (0x4000, &b"back"[..])
    );
    // Refresh with lifetime 0 deletes the allocation; a second Refresh finds none.
    let (code, _) = c.request(method::REFRESH, |b| {
        b.add_u32(attr::LIFETIME, 0);
    });
    assert_eq!(code, 0);
    let (code, _) = c.request(method::REFRESH, |b| {
        b.add_u32(attr::LIFETIME, 600);
    });
    assert_eq!(code, 437);
    turn.assert_alive();
}

/// Two adjacent ports above the ephemeral range that nothing holds right now.
fn two_free_ports() -> u16 {
    for base in (61_100..65_000).step_by(7) {
        if UdpSocket::bind(("127.0.0.1", base)).is_ok()
            && UdpSocket::bind(("127.0.0.1", base + 1)).is_ok()
        {
            return base;
        }
    }
    panic!("no two free adjacent udp ports");
}

#[test]
fn exhausted_port_range_gives_508_and_a_warning() {
    let base = two_free_ports();
    let mut turn = Turn::start(&[
        ("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", base.to_string()),
        ("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", (base + 1).to_string()),
    ]);
    let mut clients = Vec::new();
    for i in 0..2 {
        let (user, pass) = rest_credentials(SECRET, 3600, &format!("user{i}"));
        let mut c = Raw::new(turn.addr(), &user, &pass);
        let relayed = c.allocate().unwrap();
        assert!(relayed.port() == base || relayed.port() == base + 1);
        clients.push(c);
    }
    let (user, pass) = rest_credentials(SECRET, 3600, "third");
    let mut third = Raw::new(turn.addr(), &user, &pass);
    assert_eq!(third.allocate(), Err(508));
    let log = turn.log();
    assert!(
        log.contains("relay port range exhausted") && log.contains("calls"),
        "no capacity warning in log:\n{log}"
    );
    // Freeing one allocation makes room again.
    let (code, _) = clients[0].request(method::REFRESH, |b| {
        b.add_u32(attr::LIFETIME, 0);
    });
    assert_eq!(code, 0);
    // The port returns to the pool once the relay task has closed its socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut result = third.allocate();
    while result.is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        result = third.allocate();
    }
    assert!(result.is_ok(), "{result:?}");
    turn.assert_alive();
}

#[test]
fn user_quota_gives_486() {
    let mut turn = Turn::start(&[("SNIKKET_TWEAK_TURNSERVER_USER_QUOTA", "1".to_string())]);
    let (user, pass) = rest_credentials(SECRET, 3600, "frank");
    let mut a = Raw::new(turn.addr(), &user, &pass);
    a.allocate().unwrap();
    let mut b = Raw::new(turn.addr(), &user, &pass);
    assert_eq!(b.allocate(), Err(486));
    turn.assert_alive();
}

#[test]
fn malformed_stun_is_dropped_or_answered_400() {
    let mut turn = Turn::start(&[]);
    let c = Raw::new(turn.addr(), "x", "y");
    let good = Builder::new(method::BINDING, Class::Request, tid()).finish();
    let expect_400 = |bytes: &[u8]| {
        c.sock.send_to(bytes, c.server).unwrap();
        let resp = c.recv().expect("a request with a sane header gets 400");
        let msg = Message::decode(&resp).unwrap();
        assert_eq!(msg.error_code().unwrap().map(|e| e.0), Some(400));
    };
    let expect_drop = |bytes: &[u8]| {
        c.sock.send_to(bytes, c.server).unwrap();
        // The next Binding request is answered, and nothing came before it.
        let t = tid();
        c.sock
            .send_to(
                &Builder::new(method::BINDING, Class::Request, t).finish(),
                c.server,
            )
            .unwrap();
        let resp = c.recv().expect("server stopped answering");
        assert_eq!(
            Message::decode(&resp).unwrap().tid,
            t,
            "dropped input was answered"
        );
    };
    // Short header.
    expect_drop(&good[..10]);
    // Wrong magic cookie.
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&[1, 2, 3, 4]);
    expect_drop(&bad);
    // Attribute length past the end.
    let mut b = Builder::new(method::BINDING, Class::Request, tid());
    b.add(attr::SOFTWARE, b"abcd");
    let mut bad = b.finish();
    bad[22..24].copy_from_slice(&0x0400u16.to_be_bytes());
    expect_400(&bad);
    // Header length larger than the datagram, and smaller (trailing bytes).
    let mut bad = good.clone();
    bad[2..4].copy_from_slice(&64u16.to_be_bytes());
    expect_400(&bad);
    let mut bad = good.clone();
    bad.extend_from_slice(&[0u8; 40]);
    expect_400(&bad);
    // Oversized message.
    let mut big = Builder::new(method::ALLOCATE, Class::Request, tid());
    big.add(attr::DATA, &vec![0x55u8; 30_000]);
    expect_400(&big.finish());
    // Random garbage, ChannelData without an allocation, an empty datagram.
    expect_drop(&[0xffu8; 100]);
    expect_drop(&[0x40, 0x00, 0x00, 0x10, 1, 2]);
    expect_drop(&[]);
    assert!(c.binding_works());

    // Over TCP, garbage closes the connection but the server keeps serving.
    let mut s = TcpStream::connect(turn.addr()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&[0xC0; 64]).unwrap();
    let mut buf = [0u8; 16];
    let closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "garbage on tcp must close the connection");
    let mut s = TcpStream::connect(turn.addr()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let t = tid();
    s.write_all(&Builder::new(method::BINDING, Class::Request, t).finish())
        .unwrap();
    let mut resp = vec![0u8; 20];
    s.read_exact(&mut resp).unwrap();
    let len = u16::from_be_bytes([resp[2], resp[3]]) as usize;
    resp.resize(20 + len, 0);
    s.read_exact(&mut resp[20..]).unwrap();
    assert_eq!(Message::decode(&resp).unwrap().tid, t);
    turn.assert_alive();
}

#[test]
fn disabled_by_environment_exits_zero_at_once() {
    let dir = snikket_testkit::temp_dir();
    let (cmd, ..) = Turn::command(dir.path(), &[("SNIKKET_TWEAK_TURNSERVER", "0".to_string())]);
    let (ok, out) = run_bounded(cmd, Duration::from_secs(20));
    assert!(ok, "must exit 0:\n{out}");
    assert!(
        out.contains("TURN server disabled by environment, not launching."),
        "{out}"
    );
}

#[test]
fn total_quota_gives_486() {
    let mut turn = Turn::start(&[("SNIKKET_TWEAK_TURNSERVER_TOTAL_QUOTA", "1".to_string())]);
    let (user, pass) = rest_credentials(SECRET, 3600, "gina");
    let mut a = Raw::new(turn.addr(), &user, &pass);
    a.allocate().unwrap();
    let (user, pass) = rest_credentials(SECRET, 3600, "hank");
    let mut b = Raw::new(turn.addr(), &user, &pass);
    assert_eq!(b.allocate(), Err(486));
    turn.assert_alive();
}

#[test]
fn bandwidth_limit_drops_traffic_over_max_bps() {
    let mut turn = Turn::start(&[
        (
            "SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS",
            "127.0.0.1".to_string(),
        ),
        ("SNIKKET_TWEAK_TURNSERVER_MAX_BPS", "1000".to_string()),
    ]);
    let (user, pass) = rest_credentials(SECRET, 3600, "ivan");
    let mut c = Raw::new(turn.addr(), &user, &pass);
    c.allocate().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(c.channel_bind(0x4002, peer.local_addr().unwrap()), 0);
    // 40 × 500 bytes = 20 kB against a 1 kB/s allowance with a one-second burst.
    let mut frame = Vec::new();
    stun::encode_channel_data(0x4002, &[7u8; 500], false, &mut frame);
    for _ in 0..40 {
        c.sock.send_to(&frame, c.server).unwrap();
    }
    let mut got = 0;
    let mut buf = [0u8; 1024];
    while peer.recv_from(&mut buf).is_ok() {
        got += 1;
        assert!(got <= 40);
    }
    assert!(got >= 1, "nothing relayed at all:\n{}", turn.log());
    assert!(got < 40, "the limit let all {got} packets through");
    turn.assert_alive();
}

#[test]
fn message_integrity_sha256_is_answered_in_kind() {
    let mut turn = Turn::start(&[]);
    let (user, pass) = rest_credentials(SECRET, 3600, "judy");
    let mut c = Raw::new(turn.addr(), &user, &pass);
    c.allocate().unwrap();
    let t = tid();
    let mut b = Builder::new(method::REFRESH, Class::Request, t);
    b.add_u32(attr::LIFETIME, 600)
        .add(attr::USERNAME, c.username.as_bytes())
        .add(attr::REALM, c.realm.as_bytes())
        .add(attr::NONCE, c.nonce.as_bytes())
        .add_integrity_sha256(&c.key)
        .add_fingerprint();
    let resp = c.exchange(&b.finish());
    let msg = Message::decode(&resp).unwrap();
    assert_eq!((msg.tid, msg.class), (t, Class::Success));
    assert_eq!(msg.check_integrity(&c.key), Integrity::Sha256);
    assert_eq!(msg.u32(attr::LIFETIME).unwrap(), Some(600));
    turn.assert_alive();
}

#[test]
fn healthcheck_command_answers_for_a_running_server_only() {
    let mut turn = Turn::start(&[]);
    let healthcheck = |turn: &Turn| {
        let (mut cmd, _, _, _) = Turn::command(turn.dir.path(), &[]);
        cmd.env("SNIKKET_TWEAK_TURNSERVER_PORT", turn.port.to_string())
            .arg("healthcheck");
        cmd.output().unwrap()
    };
    let out = healthcheck(&turn);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "healthy must be quiet: {out:?}");
    turn.assert_alive();
    drop(turn.child.take());
    let out = healthcheck(&turn);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TURN server"), "{text}");
    assert!(text.contains(&turn.port.to_string()), "{text}");
}
