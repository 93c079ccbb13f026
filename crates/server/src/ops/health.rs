//! `healthcheck`: asks the running server's internal HTTP service for `/host_status_check`.
//!
//! The image's `HEALTHCHECK` runs this every 30 s, so it is quiet when healthy (no output, no log
//! line in the server) and says in one line what failed otherwise (shown by `docker inspect`).

use crate::ops::OpsError;
use snikket_config::Config;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole check may take; below the HEALTHCHECK timeout of 5 s.
const TIMEOUT: Duration = Duration::from_secs(4);
/// Largest answer read; the real one is a few lines.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Where the internal HTTP service answers: the first configured interface, with wildcard
/// addresses replaced by loopback.
pub fn health_addr(config: &Config) -> SocketAddr {
    let ip = config
        .server
        .internal_http_interfaces
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, config.server.internal_http_port)
}

/// Fetches the status page; `Ok(body)` only for `200` with a body starting `STATUS OK`.
pub async fn probe(addr: SocketAddr) -> Result<String, String> {
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("server not answering on {addr}: {e}"))?;
        let request = format!(
            "GET /host_status_check HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: snikket-healthcheck\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("malformed answer from {addr}"))?;
        let status_ok = head
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
        if status_ok && body.starts_with("STATUS OK") {
            Ok(body.to_string())
        } else {
            Err(format!(
                "unhealthy: {}",
                body.lines().next().unwrap_or("empty answer").trim()
            ))
        }
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {addr} within {}s",
                TIMEOUT.as_secs()
            ))
        })
}

/// The command: silent success, or one line saying what is wrong.
pub async fn main(config: &Config) -> Result<bool, OpsError> {
    match probe(health_addr(config)).await {
        Ok(_) => Ok(true),
        Err(why) => {
            println!("{why}");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn healthy_unhealthy_and_absent() {
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nSTATUS OK\n").await;
        assert!(probe(ok).await.is_ok());

        let fail = serve_once("HTTP/1.1 500 Internal\r\n\r\nSTATUS FAIL: database\n").await;
        assert_eq!(
            probe(fail).await.unwrap_err(),
            "unhealthy: STATUS FAIL: database"
        );

        let wrong = serve_once("HTTP/1.1 200 OK\r\n\r\nsomething else\n").await;
        assert!(probe(wrong).await.is_err());

        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let e = probe(closed).await.unwrap_err();
        assert!(e.starts_with("server not answering"), "{e}");
    }

    #[test]
    fn wildcard_interfaces_are_probed_on_loopback() {
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("SNIKKET_DOMAIN".into(), "chat.example.com".into());
        vars.insert("SNIKKET_ADMIN_EMAIL".into(), "a@example.com".into());
        vars.insert(
            "SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE".into(),
            "0.0.0.0".into(),
        );
        vars.insert("SNIKKET_TWEAK_INTERNAL_HTTP_PORT".into(), "6280".into());
        let c = Config::from_vars(&vars).unwrap();
        assert_eq!(health_addr(&c), "127.0.0.1:6280".parse().unwrap());
    }
}
