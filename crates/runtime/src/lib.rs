//! Process plumbing shared by every service: tracing, shutdown, TLS, secrets, atomic files.
#![warn(missing_docs)]

pub mod error;
pub mod files;
pub mod health;
pub mod memory;
pub mod procstat;
pub mod secret;
pub mod shutdown;
pub mod tls;
pub mod trace;

pub use error::RuntimeError;
pub use secret::{load_or_create_secret, Secret};
pub use shutdown::{shutdown_on_signals, CancellationToken, TaskTracker};
pub use tls::{CertResolver, CertSource};
