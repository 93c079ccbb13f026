//! Errors of the server library layer.

/// Why a server operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] snikket_store::StoreError),
    /// Process plumbing failed (files, secrets, TLS).
    #[error(transparent)]
    Runtime(#[from] snikket_runtime::RuntimeError),
    /// A user-facing problem with a command's input; the text is shown as is.
    #[error("{0}")]
    Usage(String),
    /// File system problem while preparing the data directory.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}
