//! Client-to-server connections (RFC 6120, RFC 6121): listeners, negotiation and sessions.
//!
//! One task per connection owns its socket. Negotiation (`negotiate`) takes the stream from
//! plain TCP through STARTTLS (or direct TLS), SASL SCRAM or invite registration, to resource
//! binding; the bound session (`session`) then routes stanzas through `router`.

pub mod conn;
pub mod csi;
pub mod fast;
pub mod listener;
pub mod negotiate;
pub mod register;
pub mod sasl2;
pub mod session;
pub mod sm;
pub mod tls;

pub use listener::start;
