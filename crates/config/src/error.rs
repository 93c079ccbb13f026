//! Errors of the configuration layer.

use std::fmt;
use std::path::PathBuf;

/// A malformed line in an env file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvFileError {
    /// The line is not `KEY=VALUE`.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable at fault.
    pub var: String,
    /// The offending value, `None` when missing or secret.
    pub value: Option<String>,
    /// What is allowed, as a sentence fragment (`must be ...`).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={:?}: {}", self.var, v, self.message),
            None => write!(f, "{}: {}", self.var, self.message),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The env file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The env file has a malformed line.
    #[error("{path} {source}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line error.
        source: EnvFileError,
    },
    /// One or more variables are missing or invalid; every one is listed.
    #[error("{}", render(.0))]
    Invalid(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    // Snikket's exact wording for the two required variables comes first, alone on its line.
    let mut lines = Vec::with_capacity(problems.len());
    for p in problems {
        if p.message == "required" {
            lines.push(format!("Please provide {}", p.var));
        } else {
            lines.push(p.to_string());
        }
    }
    lines.join("\n")
}

impl ConfigError {
    /// The individual problems, when this is a validation error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}
