//! Errors of the certificate manager's library layers.

use std::path::PathBuf;

/// What went wrong while managing the certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file in the certbot layout or the challenge directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Atomic writes and certificate helpers from the runtime crate.
    #[error(transparent)]
    Runtime(#[from] snikket_runtime::RuntimeError),
    /// A certificate or key could not be parsed or generated.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The ACME server refused or failed an operation; `detail` is what the CA said.
    #[error("acme: {detail}")]
    Acme {
        /// Human-readable problem summary (one line per problem).
        detail: String,
        /// Transient: the CA or the network may succeed soon ("soft" errors of spec 7.3).
        soft: bool,
    },
    /// The stored ACME account could not be used.
    #[error("acme account {path}: {reason}")]
    Account {
        /// The credentials file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The extra CA bundle could not be loaded.
    #[error("ca bundle {path}: {reason}")]
    CaBundle {
        /// The bundle file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another attempt is already running (lock held).
    #[error("another issuance attempt is in progress")]
    Busy,
    /// The process is shutting down.
    #[error("shutting down")]
    Shutdown,
}

impl CertError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        CertError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Whether a quick retry is worthwhile (spec 7.3 "soft" errors, network trouble).
    pub fn is_soft(&self) -> bool {
        match self {
            CertError::Acme { soft, .. } => *soft,
            _ => false,
        }
    }
}

impl From<instant_acme_ring::Error> for CertError {
    fn from(e: instant_acme_ring::Error) -> Self {
        use instant_acme_ring::Error as E;
        match e {
            E::Api(problem) => {
                let detail = problem_line(&problem);
                let soft = is_soft_detail(&detail)
                    || problem.status.is_some_and(|s| s >= 500)
                    || problem
                        .r#type
                        .as_deref()
                        .is_some_and(|t| t.ends_with(":rateLimited") || t.ends_with(":badNonce"));
                CertError::Acme { detail, soft }
            }
            E::Hyper(err) => CertError::Acme {
                detail: format!("connection to the ACME server failed: {err}"),
                soft: true,
            },
            E::Other(err) => CertError::Acme {
                detail: format!("connection to the ACME server failed: {err}"),
                soft: true,
            },
            E::Timeout(_) => CertError::Acme {
                detail: "timed out waiting for the ACME server".into(),
                soft: true,
            },
            other => CertError::Acme {
                detail: other.to_string(),
                soft: false,
            },
        }
    }
}

/// One line for an ACME problem document, like certbot's `detail` field.
pub(crate) fn problem_line(p: &instant_acme_ring::Problem) -> String {
    let mut line = p
        .detail
        .clone()
        .or_else(|| p.r#type.clone())
        .unwrap_or_else(|| "unknown problem".into());
    for sub in &p.subproblems {
        if let Some(d) = &sub.detail {
            line.push_str("; ");
            line.push_str(d);
        }
    }
    line
}

/// Spec 7.3: errors starting like this are worth an early retry.
pub(crate) fn is_soft_detail(detail: &str) -> bool {
    detail
        .lines()
        .any(|l| l.starts_with("DNS problem: networking error") || l.starts_with("Service busy;"))
}
