//! Shared helpers for the cross-process tests in `tests/tests/`.
//!
//! The tests themselves live in `tests/tests/*.rs`; each starts real binaries on loopback.

pub use snikket_testkit as kit;
