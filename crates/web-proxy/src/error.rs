//! Error types of the web proxy, and the one place where upstream failures become status codes.

use http::StatusCode;
use std::net::SocketAddr;

/// Failures while setting the proxy up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listening socket could not be opened.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS settings were refused by rustls.
    #[error("tls settings: {0}")]
    Tls(#[from] rustls::Error),
    /// No TLS 1.2 cipher in the configured list is supported.
    #[error("none of the configured TLS 1.2 ciphers is supported")]
    NoCiphers,
}

/// Why a proxied request failed; mapped to the branded 502/503/504 (or 413) pages.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The backend refused or reset the connection, or could not be resolved.
    #[error("backend unreachable: {0}")]
    Connect(String),
    /// The backend did not answer in time.
    #[error("backend timed out")]
    Timeout,
    /// The request body went over the route's limit while streaming.
    #[error("request body too large")]
    TooLarge,
    /// The backend answered with something that is not HTTP, or the exchange broke midway.
    #[error("backend protocol error: {0}")]
    Protocol(String),
    /// The proxy is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl UpstreamError {
    /// The status shown to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_) | UpstreamError::Protocol(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
