//! Errors of the runtime layer.

use std::path::PathBuf;

/// Why a runtime helper failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate or key file is not usable.
    #[error("certificate {path}: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TLS configuration failed.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A secret file holds something unusable.
    #[error("secret {path} is empty or unreadable")]
    BadSecret {
        /// The file.
        path: PathBuf,
    },
}

impl RuntimeError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RuntimeError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
