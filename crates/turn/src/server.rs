//! Allocation state and the request handlers (RFC 8656), independent of how bytes arrive.
//!
//! Listeners hand every datagram or stream frame to [`Server::handle`] with the client's 5-tuple;
//! responses go back through the returned bytes, relayed data through the allocation's
//! [`ClientSink`]. One relay task per allocation reads its UDP socket.

use crate::auth::{Auth, NonceState};
use crate::policy::PeerPolicy;
use crate::ports::{PortLease, PortPool};
use crate::stun::{self, attr, method, Builder, Class, Integrity, Message};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default and maximum allocation lifetimes (RFC 8656 §3.2, §7.2).
pub const DEFAULT_LIFETIME: u32 = 600;
/// Upper bound on a requested lifetime.
pub const MAX_LIFETIME: u32 = 3600;
/// Permission lifetime (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const SOFTWARE: &[u8] = b"snikket-turn";
/// Attributes we understand in requests; other comprehension-required ones get 420.
const KNOWN: &[u16] = &[
    attr::USERNAME,
    attr::REALM,
    attr::NONCE,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REQUESTED_TRANSPORT,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::CHANNEL_NUMBER,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
    attr::PADDING,
    attr::EVEN_PORT,
    attr::RESERVATION_TOKEN,
    attr::DONT_FRAGMENT,
];
/// How long a port reserved by EVEN-PORT (R bit) waits for its RESERVATION-TOKEN.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// How the client reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain UDP.
    Udp,
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

/// The client's 5-tuple: the key of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Transport.
    pub transport: Transport,
    /// Client address.
    pub client: SocketAddr,
    /// Our listening address.
    pub server: SocketAddr,
}

/// Where to send bytes for a client.
#[derive(Debug, Clone)]
pub enum ClientSink {
    /// A datagram to `peer` from our listening socket.
    Udp {
        /// The listening socket (a plain non-blocking clone: a send is one syscall, and tokio's
        /// readiness tracking would drop packets before the first writable event).
        socket: Arc<std::net::UdpSocket>,
        /// The client.
        peer: SocketAddr,
    },
    /// A frame for the connection's writer task.
    Stream(mpsc::Sender<Vec<u8>>),
}

impl ClientSink {
    /// Sends without waiting; a full buffer drops the packet, as UDP would. A datagram goes out
    /// straight from `data`; only a stream connection's writer needs a copy.
    pub fn send(&self, data: &[u8]) -> bool {
        match self {
            ClientSink::Udp { socket, peer } => socket.send_to(data, *peer).is_ok(),
            ClientSink::Stream(tx) => tx.try_send(data.to_vec()).is_ok(),
        }
    }

    fn is_stream(&self) -> bool {
        matches!(self, ClientSink::Stream(_))
    }
}

/// Relay counters, exported over gRPC.
#[derive(Debug, Default)]
pub struct Stats {
    /// Allocations created since start.
    pub allocations_total: AtomicU64,
    /// Bytes client → peer.
    pub bytes_to_peers: AtomicU64,
    /// Bytes peer → client.
    pub bytes_from_peers: AtomicU64,
    /// Packets client → peer.
    pub packets_to_peers: AtomicU64,
    /// Packets peer → client.
    pub packets_from_peers: AtomicU64,
    /// Wrong or expired credentials.
    pub auth_failures: AtomicU64,
    /// Peer policy refusals.
    pub peers_denied: AtomicU64,
    /// 508 answers.
    pub capacity_exhausted: AtomicU64,
    /// 486 answers.
    pub quota_rejections: AtomicU64,
    /// Undecodable packets.
    pub malformed: AtomicU64,
    /// Packets over the bandwidth limit.
    pub rate_limited: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Bytes-per-second limiter with a one-second burst.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn take(&mut self, n: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last);
        let refill = (elapsed.as_micros() as u64).saturating_mul(self.rate) / 1_000_000;
        if refill > 0 {
            self.tokens = (self.tokens.saturating_add(refill)).min(self.rate);
            self.last = now;
        }
        let n = n as u64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct AllocState {
    expires: Instant,
    lifetime: u32,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
    allocate_tid: [u8; 12],
    bucket: Bucket,
}

impl AllocState {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    fn channel_peer(&self, ch: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&ch)
            .filter(|(_, e)| *e > now)
            .map(|(p, _)| *p)
    }

    fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let ch = *self.by_peer.get(&peer)?;
        self.channel_peer(ch, now).map(|_| ch)
    }

    fn prune(&mut self, now: Instant) {
        self.permissions.retain(|_, e| *e > now);
        let before = self.channels.len();
        self.channels.retain(|_, (_, e)| *e > now);
        if self.channels.len() != before {
            let live: std::collections::HashSet<u16> = self.channels.keys().copied().collect();
            self.by_peer.retain(|_, ch| live.contains(ch));
        }
    }
}

/// One relay allocation.
#[derive(Debug)]
pub struct Allocation {
    tuple: FiveTuple,
    username: String,
    relay: Arc<UdpSocket>,
    /// The same socket for sending without waiting on tokio readiness.
    relay_tx: std::net::UdpSocket,
    relayed_addr: SocketAddr,
    sink: ClientSink,
    state: Mutex<AllocState>,
    cancel: CancellationToken,
    _lease: PortLease,
}

/// Settings the server core needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address relay sockets bind to (may be unspecified behind NAT).
    pub relay_bind: IpAddr,
    /// Address advertised in XOR-RELAYED-ADDRESS.
    pub relay_advertised: IpAddr,
    /// Allocations per username.
    pub user_quota: u32,
    /// Allocations in total (0 = port range only).
    pub total_quota: u32,
    /// Bytes per second per allocation (0 = unlimited).
    pub max_bps: u64,
    /// Calls the port range supports, for the exhaustion warning.
    pub calls_supported: u32,
}

/// The relay core.
#[derive(Debug)]
pub struct Server {
    auth: Auth,
    policy: PeerPolicy,
    ports: Arc<PortPool>,
    settings: Settings,
    allocations: Mutex<HashMap<FiveTuple, Arc<Allocation>>>,
    /// Counters.
    pub stats: Stats,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    last_exhausted_warning: Mutex<Option<Instant>>,
    reservations: Mutex<HashMap<[u8; 8], Reservation>>,
}

/// A port held for a later Allocate carrying its RESERVATION-TOKEN.
#[derive(Debug)]
struct Reservation {
    socket: std::net::UdpSocket,
    lease: PortLease,
    until: Instant,
}

struct Credential {
    username: String,
    key: [u8; 16],
    sha256: bool,
}

/// An error answer: code and reason phrase.
type Reject = (u16, &'static str);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn family_matches(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl Server {
    /// Creates the core; relay tasks are spawned on `tracker` and stop with `shutdown`.
    pub fn new(
        auth: Auth,
        policy: PeerPolicy,
        ports: Arc<PortPool>,
        settings: Settings,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Server> {
        Arc::new(Server {
            auth,
            policy,
            ports,
            settings,
            allocations: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            tracker,
            shutdown,
            last_exhausted_warning: Mutex::new(None),
            reservations: Mutex::new(HashMap::new()),
        })
    }

    /// The port pool (for counters).
    pub fn ports(&self) -> &PortPool {
        &self.ports
    }

    /// Allocations alive now.
    pub fn allocation_count(&self) -> usize {
        self.allocations.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Whether `tuple` has an allocation.
    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.lookup(tuple).is_some()
    }

    fn lookup(&self, tuple: &FiveTuple) -> Option<Arc<Allocation>> {
        self.allocations.lock().ok()?.get(tuple).cloned()
    }

    /// Deletes the allocation of `tuple` (its TCP connection closed, or Refresh with lifetime 0).
    pub fn remove(&self, tuple: &FiveTuple) {
        let removed = self
            .allocations
            .lock()
            .ok()
            .and_then(|mut a| a.remove(tuple));
        if let Some(a) = removed {
            a.cancel.cancel();
            tracing::debug!(client = %tuple.client, relay = %a.relayed_addr, "allocation deleted");
        }
    }

    /// Drops expired allocations, permissions and channels. Called every second.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        if let Ok(mut all) = self.allocations.lock() {
            all.retain(|_, a| {
                let alive = a.state.lock().map(|s| s.expires > now).unwrap_or(false);
                if !alive {
                    expired.push(Arc::clone(a));
                }
                alive
            });
            for a in all.values() {
                if let Ok(mut s) = a.state.lock() {
                    s.prune(now);
                }
            }
        }
        if let Ok(mut r) = self.reservations.lock() {
            r.retain(|_, res| res.until > now);
        }
        for a in expired {
            a.cancel.cancel();
            tracing::debug!(client = %a.tuple.client, relay = %a.relayed_addr, "allocation expired");
        }
    }

    /// Handles one STUN message or ChannelData frame from a client. Returns the response to send.
    pub fn handle(
        self: &Arc<Self>,
        tuple: FiveTuple,
        sink: &ClientSink,
        raw: &[u8],
    ) -> Option<Vec<u8>> {
        match raw.first() {
            Some(b) if b & 0xC0 == 0x40 => {
                self.handle_channel_data(&tuple, raw);
                None
            }
            _ => self.handle_stun(tuple, sink, raw),
        }
    }

    fn handle_stun(
        self: &Arc<Self>,
        tuple: FiveTuple,
        sink: &ClientSink,
        raw: &[u8],
    ) -> Option<Vec<u8>> {
        let msg = match Message::decode(raw) {
            Ok(m) => m,
            Err(e) => {
                bump(&self.stats.malformed, 1);
                tracing::debug!(client = %tuple.client, error = %e, len = raw.len(), "malformed stun message");
                let h = stun::header(raw)?;
                return (h.class == Class::Request)
                    .then(|| error_response(h.method, h.tid, (400, "Bad Request")));
            }
        };
        match (msg.class, msg.method) {
            (Class::Request, method::BINDING) => {
                let mut b = Builder::new(method::BINDING, Class::Success, msg.tid);
                b.add_xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client)
                    .add_addr(attr::MAPPED_ADDRESS, tuple.client)
                    .add(attr::SOFTWARE, SOFTWARE)
                    .add_fingerprint();
                Some(b.into_bytes())
            }
            (Class::Indication, method::SEND) => {
                self.handle_send(&tuple, &msg);
                None
            }
            (
                Class::Request,
                method::ALLOCATE
                | method::REFRESH
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND,
            ) => Some(self.handle_authenticated(tuple, sink, &msg)),
            (Class::Request, m) => Some(error_response(m, msg.tid, (400, "Bad Request"))),
            _ => None,
        }
    }

    /// Long-term credential check (RFC 8489 §9.2) with TURN REST usernames.
    fn authenticate(&self, msg: &Message<'_>) -> Result<Credential, Vec<u8>> {
        let now = unix_now();
        let challenge = |code: u16, reason: &'static str| {
            let mut b = Builder::new(msg.method, Class::Error, msg.tid);
            b.add_error(code, reason)
                .add(attr::REALM, self.auth.realm().as_bytes())
                .add(attr::NONCE, self.auth.nonce(now).as_bytes())
                .add(attr::SOFTWARE, SOFTWARE)
                .add_fingerprint();
            b.into_bytes()
        };
        if !msg.has_integrity() {
            return Err(challenge(401, "Unauthorized"));
        }
        let (Ok(Some(username)), Ok(Some(realm)), Ok(Some(nonce))) = (
            msg.text(attr::USERNAME),
            msg.text(attr::REALM),
            msg.text(attr::NONCE),
        ) else {
            return Err(error_response(msg.method, msg.tid, (400, "Bad Request")));
        };
        if self.auth.check_nonce(nonce, now) == NonceState::Stale {
            return Err(challenge(438, "Stale Nonce"));
        }
        if realm != self.auth.realm() {
            bump(&self.stats.auth_failures, 1);
            return Err(challenge(401, "Unauthorized"));
        }
        if let Err(e) = Auth::check_username(username, now) {
            bump(&self.stats.auth_failures, 1);
            tracing::info!(username, reason = %e, "turn credentials refused");
            return Err(challenge(401, "Unauthorized"));
        }
        let key = self.auth.key(username);
        match msg.check_integrity(&key) {
            Integrity::Sha1 => Ok(Credential {
                username: username.to_string(),
                key,
                sha256: false,
            }),
            Integrity::Sha256 => Ok(Credential {
                username: username.to_string(),
                key,
                sha256: true,
            }),
            Integrity::Missing | Integrity::Invalid => {
                bump(&self.stats.auth_failures, 1);
                tracing::info!(username, "turn credentials refused: wrong password");
                Err(challenge(401, "Unauthorized"))
            }
        }
    }

    fn handle_authenticated(
        self: &Arc<Self>,
        tuple: FiveTuple,
        sink: &ClientSink,
        msg: &Message<'_>,
    ) -> Vec<u8> {
        let unknown = msg.unknown_required(KNOWN);
        if !unknown.is_empty() {
            tracing::debug!(client = %tuple.client, ?unknown, "unknown comprehension-required attributes");
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            let mut b = Builder::new(msg.method, Class::Error, msg.tid);
            b.add_error(420, "Unknown Attribute")
                .add(attr::UNKNOWN_ATTRIBUTES, &list)
                .add_fingerprint();
            return b.into_bytes();
        }
        let cred = match self.authenticate(msg) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let result = match msg.method {
            method::ALLOCATE => self.handle_allocate(tuple, sink, msg, &cred),
            method::REFRESH => self.handle_refresh(&tuple, msg, &cred),
            method::CREATE_PERMISSION => self.handle_create_permission(&tuple, msg, &cred),
            _ => self.handle_channel_bind(&tuple, msg, &cred),
        };
        let mut b = match result {
            Ok(b) => b,
            Err(reject) => {
                let mut b = Builder::new(msg.method, Class::Error, msg.tid);
                b.add_error(reject.0, reject.1);
                b
            }
        };
        b.add(attr::SOFTWARE, SOFTWARE);
        if cred.sha256 {
            b.add_integrity_sha256(&cred.key);
        } else {
            b.add_integrity(&cred.key);
        }
        b.add_fingerprint();
        b.into_bytes()
    }

    fn owned_allocation(
        &self,
        tuple: &FiveTuple,
        cred: &Credential,
    ) -> Result<Arc<Allocation>, Reject> {
        let a = self.lookup(tuple).ok_or((437, "Allocation Mismatch"))?;
        if a.username != cred.username {
            return Err((441, "Wrong Credentials"));
        }
        Ok(a)
    }

    /// RFC 8656 §7.2.
    fn handle_allocate(
        self: &Arc<Self>,
        tuple: FiveTuple,
        sink: &ClientSink,
        msg: &Message<'_>,
        cred: &Credential,
    ) -> Result<Builder, Reject> {
        if let Some(existing) = self.lookup(&tuple) {
            let state = existing.state.lock().map_err(|_| (500, "Server Error"))?;
            if state.allocate_tid == msg.tid && existing.username == cred.username {
                // A retransmission: answer as before.
                let mut b = Builder::new(method::ALLOCATE, Class::Success, msg.tid);
                b.add_xor_addr(attr::XOR_RELAYED_ADDRESS, existing.relayed_addr)
                    .add_u32(attr::LIFETIME, state.lifetime)
                    .add_xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client);
                return Ok(b);
            }
            return Err((437, "Allocation Mismatch"));
        }
        match msg.requested_transport() {
            Ok(Some(17)) => {}
            Ok(Some(_)) => return Err((442, "Unsupported Transport Protocol")),
            Ok(None) | Err(_) => return Err((400, "Bad Request")),
        }
        let want_v6 = match msg.requested_family() {
            Ok(None) | Ok(Some(1)) => false,
            Ok(Some(2)) => true,
            Ok(Some(_)) | Err(_) => return Err((440, "Address Family not Supported")),
        };
        if want_v6 != self.settings.relay_advertised.is_ipv6() {
            return Err((440, "Address Family not Supported"));
        }
        let requested = msg.u32(attr::LIFETIME).map_err(|_| (400, "Bad Request"))?;
        let lifetime = requested
            .unwrap_or(DEFAULT_LIFETIME)
            .clamp(DEFAULT_LIFETIME, MAX_LIFETIME);
        {
            let all = self.allocations.lock().map_err(|_| (500, "Server Error"))?;
            let total = all.len() as u64;
            if self.settings.total_quota != 0 && total >= u64::from(self.settings.total_quota) {
                bump(&self.stats.quota_rejections, 1);
                return Err((486, "Allocation Quota Reached"));
            }
            let mine = all.values().filter(|a| a.username == cred.username).count() as u64;
            if mine >= u64::from(self.settings.user_quota) {
                bump(&self.stats.quota_rejections, 1);
                tracing::info!(username = %cred.username, quota = self.settings.user_quota, "allocation quota reached");
                return Err((486, "Allocation Quota Reached"));
            }
        }
        let even_port = msg.get(attr::EVEN_PORT);
        let token = msg.get(attr::RESERVATION_TOKEN);
        let mut new_token = None;
        let (std_sock, lease) = match (even_port, token) {
            (Some(_), Some(_)) => return Err((400, "Bad Request")),
            (_, Some(token)) => {
                let token: [u8; 8] = token.try_into().map_err(|_| (400, "Bad Request"))?;
                let res = self
                    .reservations
                    .lock()
                    .ok()
                    .and_then(|mut r| r.remove(&token))
                    .filter(|r| r.until > Instant::now());
                match res {
                    Some(r) => (r.socket, r.lease),
                    None => return Err((508, "Insufficient Capacity")),
                }
            }
            (even, None) => {
                let reserve = match even {
                    Some([flags, ..]) => flags & 0x80 != 0,
                    Some([]) => return Err((400, "Bad Request")),
                    None => false,
                };
                match self
                    .ports
                    .allocate_even(self.settings.relay_bind, even.is_some(), reserve)
                {
                    Ok((s, l, next)) => {
                        if let Some((socket, lease)) = next {
                            let mut t = [0u8; 8];
                            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut t);
                            if let Ok(mut r) = self.reservations.lock() {
                                r.insert(
                                    t,
                                    Reservation {
                                        socket,
                                        lease,
                                        until: Instant::now() + RESERVATION_LIFETIME,
                                    },
                                );
                            }
                            new_token = Some(t);
                        }
                        (s, l)
                    }
                    Err(_) => {
                        bump(&self.stats.capacity_exhausted, 1);
                        self.warn_exhausted();
                        return Err((508, "Insufficient Capacity"));
                    }
                }
            }
        };
        let relay_tx = std_sock
            .set_nonblocking(true)
            .and_then(|()| std_sock.try_clone())
            .map_err(|e| {
                tracing::error!(error = %e, "cannot clone relay socket");
                (500, "Server Error")
            })?;
        let relay = UdpSocket::from_std(std_sock).map_err(|e| {
            tracing::error!(error = %e, "cannot register relay socket");
            (500, "Server Error")
        })?;
        let relayed_addr = SocketAddr::new(self.settings.relay_advertised, lease.port());
        let alloc = Arc::new(Allocation {
            tuple,
            username: cred.username.clone(),
            relay: Arc::new(relay),
            relay_tx,
            relayed_addr,
            sink: sink.clone(),
            state: Mutex::new(AllocState {
                expires: Instant::now() + Duration::from_secs(u64::from(lifetime)),
                lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                by_peer: HashMap::new(),
                allocate_tid: msg.tid,
                bucket: Bucket::new(self.settings.max_bps),
            }),
            cancel: self.shutdown.child_token(),
            _lease: lease,
        });
        if let Ok(mut all) = self.allocations.lock() {
            all.insert(tuple, Arc::clone(&alloc));
        }
        bump(&self.stats.allocations_total, 1);
        tracing::debug!(client = %tuple.client, relay = %relayed_addr, lifetime, "allocation created");
        let me = Arc::clone(self);
        let task_alloc = Arc::clone(&alloc);
        self.tracker
            .spawn(async move { me.relay_loop(task_alloc).await });
        let mut b = Builder::new(method::ALLOCATE, Class::Success, msg.tid);
        b.add_xor_addr(attr::XOR_RELAYED_ADDRESS, relayed_addr)
            .add_u32(attr::LIFETIME, lifetime)
            .add_xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client);
        if let Some(t) = new_token {
            b.add(attr::RESERVATION_TOKEN, &t);
        }
        Ok(b)
    }

    fn warn_exhausted(&self) {
        let Ok(mut last) = self.last_exhausted_warning.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            min_port = self.ports.min(),
            max_port = self.ports.max(),
            ports = self.ports.size(),
            calls_supported = self.settings.calls_supported,
            "relay port range exhausted: it supports about {} simultaneous calls (4 ports per call); \
             widen SNIKKET_TWEAK_TURNSERVER_MIN_PORT..SNIKKET_TWEAK_TURNSERVER_MAX_PORT",
            self.settings.calls_supported
        );
    }

    /// RFC 8656 §8.
    fn handle_refresh(
        &self,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        cred: &Credential,
    ) -> Result<Builder, Reject> {
        let a = self.owned_allocation(tuple, cred)?;
        let requested = msg
            .u32(attr::LIFETIME)
            .map_err(|_| (400, "Bad Request"))?
            .unwrap_or(DEFAULT_LIFETIME);
        let mut b = Builder::new(method::REFRESH, Class::Success, msg.tid);
        if requested == 0 {
            self.remove(tuple);
            b.add_u32(attr::LIFETIME, 0);
            return Ok(b);
        }
        let lifetime = requested.min(MAX_LIFETIME);
        if let Ok(mut s) = a.state.lock() {
            s.expires = Instant::now() + Duration::from_secs(u64::from(lifetime));
            s.lifetime = lifetime;
        }
        b.add_u32(attr::LIFETIME, lifetime);
        Ok(b)
    }

    fn check_peer(&self, a: &Allocation, peer: SocketAddr) -> Result<(), Reject> {
        // Policy first: a denied address is 403 whatever its family.
        if !self.policy.allows(peer.ip()) {
            bump(&self.stats.peers_denied, 1);
            tracing::info!(client = %a.tuple.client, peer = %peer.ip(), "peer refused by policy");
            return Err((403, "Forbidden"));
        }
        if !family_matches(peer.ip(), a.relayed_addr.ip()) {
            return Err((443, "Peer Address Family Mismatch"));
        }
        Ok(())
    }

    /// RFC 8656 §10.
    fn handle_create_permission(
        &self,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        cred: &Credential,
    ) -> Result<Builder, Reject> {
        let a = self.owned_allocation(tuple, cred)?;
        let peers = msg
            .xor_addrs(attr::XOR_PEER_ADDRESS)
            .map_err(|_| (400, "Bad Request"))?;
        if peers.is_empty() {
            return Err((400, "Bad Request"));
        }
        for p in &peers {
            self.check_peer(&a, *p)?;
        }
        let until = Instant::now() + PERMISSION_LIFETIME;
        if let Ok(mut s) = a.state.lock() {
            for p in peers {
                s.permissions.insert(p.ip(), until);
            }
        }
        Ok(Builder::new(
            method::CREATE_PERMISSION,
            Class::Success,
            msg.tid,
        ))
    }

    /// RFC 8656 §12.
    fn handle_channel_bind(
        &self,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        cred: &Credential,
    ) -> Result<Builder, Reject> {
        let a = self.owned_allocation(tuple, cred)?;
        let ch = match msg.channel_number() {
            Ok(Some(ch)) if stun::valid_channel(ch) => ch,
            _ => return Err((400, "Bad Request")),
        };
        let peer = match msg.xor_addr(attr::XOR_PEER_ADDRESS) {
            Ok(Some(p)) => p,
            _ => return Err((400, "Bad Request")),
        };
        self.check_peer(&a, peer)?;
        let now = Instant::now();
        let mut s = a.state.lock().map_err(|_| (500, "Server Error"))?;
        if let Some(bound) = s.channel_peer(ch, now) {
            if bound != peer {
                return Err((400, "Bad Request"));
            }
        }
        if let Some(other) = s.channel_of(peer, now) {
            if other != ch {
                return Err((400, "Bad Request"));
            }
        }
        s.channels.insert(ch, (peer, now + CHANNEL_LIFETIME));
        s.by_peer.insert(peer, ch);
        s.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        Ok(Builder::new(method::CHANNEL_BIND, Class::Success, msg.tid))
    }

    /// RFC 8656 §11.2: Send indications are dropped silently when anything is wrong.
    fn handle_send(&self, tuple: &FiveTuple, msg: &Message<'_>) {
        let Some(a) = self.lookup(tuple) else { return };
        let (Ok(Some(peer)), Some(data)) =
            (msg.xor_addr(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            return;
        };
        if !family_matches(peer.ip(), a.relayed_addr.ip()) {
            return;
        }
        if !self.policy.allows(peer.ip()) {
            bump(&self.stats.peers_denied, 1);
            return;
        }
        self.to_peer(&a, peer, data, |s, now| s.permitted(peer.ip(), now));
    }

    /// RFC 8656 §12.5: ChannelData from the client.
    fn handle_channel_data(&self, tuple: &FiveTuple, raw: &[u8]) {
        let Ok((ch, data)) = stun::decode_channel_data(raw) else {
            bump(&self.stats.malformed, 1);
            return;
        };
        let Some(a) = self.lookup(tuple) else { return };
        let peer = match a.state.lock() {
            Ok(s) => s.channel_peer(ch, Instant::now()),
            Err(_) => None,
        };
        let Some(peer) = peer else { return };
        self.to_peer(&a, peer, data, |s, now| s.permitted(peer.ip(), now));
    }

    fn to_peer(
        &self,
        a: &Allocation,
        peer: SocketAddr,
        data: &[u8],
        ok: impl Fn(&AllocState, Instant) -> bool,
    ) {
        let allowed = match a.state.lock() {
            Ok(mut s) => {
                if !ok(&s, Instant::now()) {
                    return;
                }
                s.bucket.take(data.len())
            }
            Err(_) => return,
        };
        if !allowed {
            bump(&self.stats.rate_limited, 1);
            return;
        }
        if a.relay_tx.send_to(data, peer).is_ok() {
            bump(&self.stats.packets_to_peers, 1);
            bump(&self.stats.bytes_to_peers, data.len() as u64);
        }
    }

    /// Reads the relay socket until the allocation ends, forwarding permitted peers' packets.
    async fn relay_loop(self: Arc<Self>, a: Arc<Allocation>) {
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::with_capacity(2048);
        let pad = a.sink.is_stream();
        loop {
            let (n, peer) = tokio::select! {
                _ = a.cancel.cancelled() => break,
                r = a.relay.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(relay = %a.relayed_addr, error = %e, "relay receive error");
                        // Never spin on a persistent error.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                },
            };
            let data = &buf[..n];
            let channel = match a.state.lock() {
                Ok(mut s) => {
                    let now = Instant::now();
                    if !s.permitted(peer.ip(), now) {
                        continue;
                    }
                    if !s.bucket.take(n) {
                        bump(&self.stats.rate_limited, 1);
                        continue;
                    }
                    s.channel_of(peer, now)
                }
                Err(_) => break,
            };
            let sent = match channel {
                Some(ch) => {
                    stun::encode_channel_data(ch, data, pad, &mut out);
                    a.sink.send(&out)
                }
                None => {
                    let mut tid = [0u8; 12];
                    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut tid);
                    let mut b = Builder::new(method::DATA, Class::Indication, tid);
                    b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer)
                        .add(attr::DATA, data);
                    a.sink.send(&b.into_bytes())
                }
            };
            if sent {
                bump(&self.stats.packets_from_peers, 1);
                bump(&self.stats.bytes_from_peers, n as u64);
            }
        }
    }
}

fn error_response(method: u16, tid: [u8; 12], reject: Reject) -> Vec<u8> {
    let mut b = Builder::new(method, Class::Error, tid);
    b.add_error(reject.0, reject.1)
        .add(attr::SOFTWARE, SOFTWARE)
        .add_fingerprint();
    b.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_and_refills() {
        let mut b = Bucket::new(1000);
        assert!(b.take(600));
        assert!(b.take(400));
        assert!(!b.take(1));
        b.last -= Duration::from_millis(500);
        assert!(b.take(400));
        let mut unlimited = Bucket::new(0);
        assert!(unlimited.take(usize::MAX));
    }

    #[test]
    fn channel_and_permission_expiry() {
        let now = Instant::now();
        let peer: SocketAddr = "8.8.8.8:1000".parse().unwrap();
        let mut s = AllocState {
            expires: now,
            lifetime: 600,
            permissions: HashMap::from([(peer.ip(), now + Duration::from_secs(1))]),
            channels: HashMap::from([(0x4000, (peer, now + Duration::from_secs(1)))]),
            by_peer: HashMap::from([(peer, 0x4000)]),
            allocate_tid: [0; 12],
            bucket: Bucket::new(0),
        };
        assert!(s.permitted(peer.ip(), now));
        assert_eq!(s.channel_of(peer, now), Some(0x4000));
        let later = now + Duration::from_secs(2);
        assert!(!s.permitted(peer.ip(), later));
        assert_eq!(s.channel_peer(0x4000, later), None);
        s.prune(later);
        assert!(s.permissions.is_empty() && s.channels.is_empty() && s.by_peer.is_empty());
    }
}
