//! Generated gRPC contracts plus the loopback-only and shared-secret rules for internal APIs.
//!
//! Every internal service listens on a loopback address ([`check_loopback`]) and checks
//! `authorization: Bearer <secret>` on each call ([`SecretCheck`]); clients add it with
//! [`SecretHeader`]. The secret is the file created once in the data volume.
#![warn(missing_docs)]

mod auth;
mod error;

pub use auth::{check_loopback, SecretCheck, SecretHeader, AUTHORIZATION};
pub use error::RpcError;

#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}

pub use generated::snikket;
pub use tonic;
