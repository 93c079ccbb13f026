//! `healthcheck`: asks the running server's internal HTTP service for `/host_status_check`.
//!
//! The image's `HEALTHCHECK` runs this every 30 s, so it is quiet when healthy (no output, no log
//! line in the server) and says in one line what failed otherwise (shown by `docker inspect`).

use crate::ops::OpsError;
use snikket_config::Config;
use snikket_runtime::health::{http_get, probe_addr};
use std::net::SocketAddr;

/// Where the internal HTTP service answers: the first configured interface, with wildcard
/// addresses replaced by loopback.
pub fn health_addr(config: &Config) -> SocketAddr {
    probe_addr(
        &config.server.internal_http_interfaces,
        config.server.internal_http_port,
    )
}

/// Fetches the status page; `Ok(body)` only for `200` with a body starting `STATUS OK`.
pub async fn probe(addr: SocketAddr) -> Result<String, String> {
    let answer = http_get(addr, "/host_status_check")
        .await
        .map_err(|e| format!("server {e}"))?;
    if answer.status == 200 && answer.body.starts_with("STATUS OK") {
        Ok(answer.body)
    } else {
        Err(format!(
            "unhealthy: {}",
            answer.body.lines().next().unwrap_or("empty answer").trim()
        ))
    }
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
    use snikket_testkit::serve_once;
    use tokio::net::TcpListener;

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
