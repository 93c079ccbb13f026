//! Typed repositories, one module per concept.

pub mod accounts;
pub mod archive;
pub mod backup;
pub mod blocking;
pub mod circle_admin;
pub mod circles;
pub mod fast;
pub mod invites;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod private;
pub mod push;
pub mod roster;
pub mod sessions;
pub mod uploads;
pub mod users;
