//! Loopback ports for servers under test.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports this process handed out already, TCP and UDP apart.
static GIVEN: Mutex<(BTreeSet<u16>, BTreeSet<u16>)> =
    Mutex::new((BTreeSet::new(), BTreeSet::new()));

/// A port the kernel offered that this process has not handed out before. The kernel may offer a
/// port it just released again (a server given the same port for two listeners then fails to
/// start), so each port is given out once.
fn fresh(udp: bool, offer: impl Fn() -> u16) -> u16 {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = if udp { &mut given.1 } else { &mut given.0 };
    loop {
        let port = offer();
        if set.insert(port) {
            return port;
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (racy by nature: another process may take it).
pub fn free_port() -> u16 {
    fresh(false, || {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
        l.local_addr().expect("local addr").port()
    })
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    fresh(true, || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind ephemeral udp port");
        s.local_addr().expect("local addr").port()
    })
}

/// Waits until something accepts TCP connections on `addr`, or panics after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {addr} after {timeout:?}");
}

/// Listens on 127.0.0.1, answers the first connection with `answer` after reading its request
/// (up to 1 KiB), then closes. For testing probes and clients against a canned response.
pub async fn serve_once(answer: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    addr
}
