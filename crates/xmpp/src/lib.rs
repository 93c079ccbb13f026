//! XMPP wire layer for the Snikket server: SCRAM, stream framing with hard limits, account policy.
//!
//! Pure functions and state machines over bytes: no sockets, no storage, no panics on input.
//!
//! - [`scram`]: SASL SCRAM-SHA-1/-256 and -PLUS, server side (RFC 5802, RFC 7677, XEP-0440).
//! - [`framing`]: the incremental stream parser with byte, depth, attribute and element
//!   limits, and writer helpers (RFC 6120 §4, XEP-0478).
//! - [`account`]: username (nodeprep) and password policy (XEP-0077, spec §3.3).
//!
//! Each error enum has exactly one mapping to its wire condition: [`ScramError::condition`]
//! (SASL failure), [`StreamError::condition`] (stream error, then close),
//! [`AccountError::condition`] and [`AccountError::text`] (stanza error).
#![warn(missing_docs)]

pub mod account;
pub mod error;
pub mod framing;
pub mod scram;

pub use error::{AccountError, ScramError, StreamError};
