//! Errors of the storage layer.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("opening database: {0}")]
    Open(String),
    /// A migration failed.
    #[error("migrating database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up.
        what: &'static str,
    },
    /// The change conflicts with existing data (duplicate name, last admin, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database reported an error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Stored data is not what this version understands.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}
