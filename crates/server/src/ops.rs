//! Operator commands of the `snikket` container: `firewall`, `doctor`, `backup`, `restore` and
//! `healthcheck` (the image's `HEALTHCHECK`, since a `FROM scratch` image has no shell or curl).
//!
//! Each is reachable as `snikket-server <command>` and, through links in the image, as
//! `docker exec snikket <command>`. Output is plain text for people; exit status 0 means fine.

pub mod backup;
pub mod doctor;
pub mod firewall;
pub mod health;
pub mod tar;

use clap::Subcommand;
use snikket_config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Names the binary answers to when invoked through a link of that name.
pub const COMMANDS: &[&str] = &["firewall", "doctor", "backup", "restore", "healthcheck"];

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] snikket_store::StoreError),
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A backup archive is malformed or unsafe to extract.
    #[error("bad backup archive: {0}")]
    Archive(String),
    /// The command refuses to run in this situation; the text says what to do instead.
    #[error("{0}")]
    Refused(String),
}

impl OpsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        OpsError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The operator sub-commands, flattened into the server's command line.
#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// Print firewall rules that open the configured ports, the TURN relay range included.
    Firewall(firewall::FirewallArgs),
    /// Check DNS records, open ports and the certificate; print a fix for every problem.
    Doctor(doctor::DoctorArgs),
    /// Write a consistent snapshot of the data directory (database included) to a tar file.
    Backup(backup::BackupArgs),
    /// Restore a backup made by `backup` into the data directory (the server must be stopped).
    Restore(backup::RestoreArgs),
    /// Exit 0 when the running server answers its health check (used by the image's HEALTHCHECK).
    Healthcheck,
}

/// Runs one operator command to completion and maps the outcome to an exit status.
pub fn main(config: &Config, runtime: &tokio::runtime::Runtime, command: OpsCommand) -> ExitCode {
    let result: Result<bool, OpsError> = match command {
        OpsCommand::Firewall(args) => {
            print!("{}", firewall::render(config, args.format()));
            Ok(true)
        }
        OpsCommand::Doctor(args) => runtime.block_on(doctor::main(config, &args)),
        OpsCommand::Backup(args) => runtime.block_on(backup::main_backup(config, &args)),
        OpsCommand::Restore(args) => runtime.block_on(backup::main_restore(config, &args)),
        OpsCommand::Healthcheck => runtime.block_on(health::main(config)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
