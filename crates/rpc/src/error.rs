//! Errors of the RPC plumbing.

use std::net::SocketAddr;

/// Why an internal API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Internal APIs never listen on a non-loopback address.
    #[error("refusing to expose an internal API on {0}: only loopback addresses are allowed")]
    NotLoopback(SocketAddr),
    /// The transport failed.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}
