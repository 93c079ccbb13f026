//! Errors of the TURN server's setup code (per-packet problems are STUN error responses instead).

use std::net::SocketAddr;

/// A failure that stops the TURN server from starting.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// A listening socket could not be bound.
    #[error("binding {kind} listener on {addr}")]
    Bind {
        /// `udp`, `tcp`, `tls` or `grpc`.
        kind: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("tls setup")]
    Tls(#[source] snikket_runtime::RuntimeError),
    /// The shared secret could not be read or created.
    #[error("reading the turn shared secret")]
    Secret(#[source] snikket_runtime::RuntimeError),
    /// No address to advertise for relays could be found.
    #[error("cannot determine the relay address: {0}")]
    NoAddress(String),
}
