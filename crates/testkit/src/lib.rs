//! Test helpers: temp dirs, database selection, a test CA, loopback ports, child processes.
//!
//! Only ever used as a dev-dependency (and by the `tests` crate). Panicking is fine here: a helper
//! that cannot set up its fixture should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod ca;
pub mod db;
pub mod net;
pub mod process;

pub use ca::TestCa;
pub use db::{Backend, TestDb};
pub use net::{free_port, free_udp_port, serve_once, wait_for_port};
pub use process::Child;

/// A temporary directory removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("snikket-test-")
        .tempdir()
        .expect("create temp dir")
}

/// The workspace root, for finding fixtures and built binaries.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}
