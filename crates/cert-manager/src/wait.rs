//! `SNIKKET_CERTS_WAIT=1`: wait until `http://DOMAIN` answers before the first request (spec 7.4).

use bytes::Bytes;
use http_body_util::Empty;
use std::time::Duration;

/// Up to 99 `HEAD` requests, sleeping `i^0.8` seconds between them (about six minutes in all).
/// Any HTTP answer counts; returns false when none came.
pub async fn wait_for_http(url: &str) -> bool {
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    for i in 1..=99u32 {
        let Ok(req) = http::Request::head(url).body(Empty::<Bytes>::new()) else {
            return false;
        };
        match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
            Ok(Ok(_)) => {
                tracing::info!(%url, attempts = i, "http is available");
                return true;
            }
            Ok(Err(e)) => tracing::debug!(%url, error = %e, "waiting for http"),
            Err(_) => tracing::debug!(%url, "waiting for http: timeout"),
        }
        tokio::time::sleep(Duration::from_secs_f64(f64::from(i).powf(0.8))).await;
    }
    false
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn returns_once_http_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = format!("http://127.0.0.1:{port}/");
        let ok = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            super::wait_for_http(&url),
        )
        .await
        .unwrap();
        assert!(ok, "any HTTP status counts as available");
    }
}
