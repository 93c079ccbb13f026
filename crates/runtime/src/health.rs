//! Building blocks of the `healthcheck` sub-commands that the images' `HEALTHCHECK` runs (a
//! `FROM scratch` image has no shell or curl, so each binary checks itself).
//!
//! Conventions for every service: silent and exit 0 when healthy; one line saying what is wrong
//! and exit 1 otherwise (`docker inspect` shows it). Every probe is bounded by [`TIMEOUT`], below
//! the images' `HEALTHCHECK --timeout=5s`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(4);
/// Largest answer read; health answers are a few lines.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Where to probe a listener bound to `ip`: wildcard addresses become loopback of the same family.
pub fn probe_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The first of `interfaces` as a probe address (loopback when the list is empty).
pub fn probe_addr(interfaces: &[IpAddr], port: u16) -> SocketAddr {
    let ip = interfaces
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(probe_ip(ip), port)
}

/// An HTTP answer: status code and body (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// `GET path` over HTTP/1.0 on `addr`, bounded by [`TIMEOUT`]. Errors are one readable line.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpAnswer, String> {
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("not answering on {addr}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: snikket-healthcheck\r\n\r\n"
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
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("malformed status line from {addr}"))?;
        Ok(HttpAnswer {
            status,
            body: body.to_string(),
        })
    };
    bounded(addr, work).await
}

/// Opens (and closes) a TCP connection to `addr`, bounded by [`TIMEOUT`].
pub async fn tcp_connect(addr: SocketAddr) -> Result<(), String> {
    bounded(addr, async {
        TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("not answering on {addr}: {e}"))
    })
    .await
}

async fn bounded<T>(
    addr: SocketAddr,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {addr} within {}s",
                TIMEOUT.as_secs()
            ))
        })
}

/// What a service binary was asked to do: nothing or `run` runs the service, `healthcheck`
/// probes the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// Run the service.
    Run,
    /// Probe the running service (the image's `HEALTHCHECK`).
    Healthcheck,
}

/// Reads the command line of `binary`; anything else prints the usage and gives exit code 2.
pub fn invocation(binary: &str) -> Result<Invocation, std::process::ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] | ["run"] => Ok(Invocation::Run),
        ["healthcheck"] => Ok(Invocation::Healthcheck),
        _ => {
            eprintln!("usage: {binary} [run|healthcheck]");
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// Turns a probe result into the command's exit: silent success, or the reason on stdout.
pub fn report(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(why) => {
            println!("{why}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snikket_testkit::serve_once;
    use tokio::net::TcpListener;

    async fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn http_get_reads_status_and_body() {
        let a = serve_once("HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\nbye").await;
        assert_eq!(
            http_get(a, "/").await.unwrap(),
            HttpAnswer {
                status: 301,
                body: "bye".into()
            }
        );
        let junk = serve_once("garbage").await;
        assert!(http_get(junk, "/").await.unwrap_err().contains("malformed"));
        let e = http_get(closed_port().await, "/").await.unwrap_err();
        assert!(e.starts_with("not answering"), "{e}");
    }

    #[tokio::test]
    async fn tcp_connect_tells_open_from_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(tcp_connect(listener.local_addr().unwrap()).await.is_ok());
        assert!(tcp_connect(closed_port().await).await.is_err());
    }

    #[test]
    fn wildcards_are_probed_on_loopback() {
        assert_eq!(
            probe_addr(&["0.0.0.0".parse().unwrap()], 80),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            probe_addr(&["::".parse().unwrap(), "1.2.3.4".parse().unwrap()], 80),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(probe_addr(&[], 5), "127.0.0.1:5".parse().unwrap());
        assert_eq!(
            probe_addr(&["10.0.0.1".parse().unwrap()], 5),
            "10.0.0.1:5".parse().unwrap()
        );
    }
}
