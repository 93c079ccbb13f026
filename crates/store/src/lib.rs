//! Persistent state: one `Store` over SQLite or PostgreSQL with typed repositories.
//!
//! Repository methods live in `repo/*.rs`, one file per concept, each as `impl Store` blocks.
//! A method awaits its commit before returning, so callers can acknowledge to clients safely.
#![warn(missing_docs)]

mod conns;
mod error;
mod pool;
mod repo;
mod time_now;

pub use error::StoreError;
pub use pool::{Backend, Store};
pub use repo::accounts::{Account, AccountState, Credential, Role};
pub use repo::archive::{
    ArchiveEntry, ArchivePage, ArchiveQuery, Archived, ARCHIVE_ROWS_PER_INSERT,
};
pub use repo::circles::{Circle, CircleChat, DEFAULT_CIRCLE_ID};
pub use repo::fast::FastToken;
pub use repo::invites::{new_token, Invite, InviteKind, InviteProblem, NewInvite};
pub use repo::muc::MucRoom;
pub use repo::pep::{PepItem, PepNode};
pub use repo::push::{new_registration, PushRegistration};
pub use repo::roster::{RosterItem, Subscription};
pub use repo::sessions::{NewSession, PortalSession};
pub use repo::uploads::{QuotaExceeded, Upload};
pub use repo::users::{days_ago, AccountChangeError, DAY_SECS};
pub use time_now::now;

#[cfg(test)]
mod tests_support;
