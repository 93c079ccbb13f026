//! Failure reports to a Sentry-compatible DSN (`REPORT_DSN`, spec 7.3 `report-error.sh`):
//! `POST <scheme>://<host>/api/<project>/store/` with `X-Sentry-Auth` and the errors summary.

use bytes::Bytes;
use http_body_util::Full;
use std::path::Path;
use std::time::Duration;

/// The parts of a DSN `scheme://KEY[:SECRET]@HOST[:PORT]/[PATH/]PROJECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// `http` or `https`.
    pub scheme: String,
    /// Public key (user part).
    pub key: String,
    /// Host and optional port.
    pub host: String,
    /// Numeric project id (last path segment).
    pub project: String,
}

impl Dsn {
    /// Parses a DSN; `None` when it does not have the expected shape.
    pub fn parse(dsn: &str) -> Option<Dsn> {
        let (scheme, rest) = dsn.trim().split_once("://")?;
        if scheme != "https" && scheme != "http" {
            return None;
        }
        let (user, rest) = rest.split_once('@')?;
        let key = user.split(':').next()?.to_string();
        let (host, path) = rest.split_once('/')?;
        let project = path.trim_end_matches('/').rsplit('/').next()?.to_string();
        if key.is_empty()
            || host.is_empty()
            || project.is_empty()
            || !project.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Dsn {
            scheme: scheme.to_string(),
            key,
            host: host.to_string(),
            project,
        })
    }

    /// The store endpoint.
    pub fn store_url(&self) -> String {
        format!(
            "{}://{}/api/{}/store/",
            self.scheme, self.host, self.project
        )
    }
}

/// Sends one report; failures are logged, never fatal.
pub async fn send(dsn: &str, ca_bundle: Option<&Path>, title: &str, body: &str) {
    let Some(dsn) = Dsn::parse(dsn) else {
        tracing::warn!("REPORT_DSN is not a valid DSN; not reporting");
        return;
    };
    let connector = match crate::acme::connector(ca_bundle) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "error report client");
            return;
        }
    };
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let payload = serde_json::json!({
        "exception": [{ "type": title, "value": body }]
    });
    let req = http::Request::post(dsn.store_url())
        .header("content-type", "application/json")
        .header(
            "x-sentry-auth",
            format!(
                "Sentry sentry_version=7, sentry_key={}, sentry_client=snikket-cert-manager/{}",
                dsn.key,
                env!("CARGO_PKG_VERSION")
            ),
        )
        .body(Full::new(Bytes::from(payload.to_string())));
    let Ok(req) = req else {
        tracing::warn!("could not build the error report request");
        return;
    };
    match tokio::time::timeout(Duration::from_secs(15), client.request(req)).await {
        Ok(Ok(rsp)) if rsp.status().is_success() => tracing::info!("error report sent"),
        Ok(Ok(rsp)) => tracing::warn!(status = %rsp.status(), "error report refused"),
        Ok(Err(e)) => tracing::warn!(error = %e, "error report failed"),
        Err(_) => tracing::warn!("error report timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sentry_dsns() {
        let d = Dsn::parse("https://abc123@sentry.example.com/42").unwrap();
        assert_eq!(d.key, "abc123");
        assert_eq!(d.store_url(), "https://sentry.example.com/api/42/store/");
        let d = Dsn::parse("http://k:secret@127.0.0.1:9000/sub/path/7").unwrap();
        assert_eq!(d.key, "k");
        assert_eq!(d.store_url(), "http://127.0.0.1:9000/api/7/store/");
        for bad in [
            "",
            "ftp://k@h/1",
            "https://h/1",
            "https://k@h/",
            "https://k@h/abc",
        ] {
            assert!(Dsn::parse(bad).is_none(), "{bad}");
        }
    }
}
