//! Entry point of the `snikket` container: the server daemon and its command line.
//!
//! Invoked as `create-invite` (a link to this binary) it behaves like `snikket-server create-invite`.

use clap::{Parser, Subcommand};
use snikket_server::cli::{self, InviteArgs};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "snikket-server", version, about = "Snikket XMPP server")]
struct Cli {
    /// Env file to read before the environment (Docker env_file format).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default).
    Run,
    /// Create an invitation link and print it.
    CreateInvite(InviteArgs),
    /// Operator commands: firewall, doctor, backup, restore, healthcheck.
    #[command(flatten)]
    Ops(snikket_server::ops::OpsCommand),
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    if invoked_as == "create-invite" || snikket_server::ops::COMMANDS.contains(&invoked_as.as_str())
    {
        args.insert(1, OsString::from(invoked_as.as_str()));
    }
    let cli = Cli::parse_from(args);
    let config = match snikket_config::Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            snikket_runtime::trace::init(config.log_level);
            for w in &config.warnings {
                tracing::warn!(warning = %w, "configuration");
            }
            let result = runtime.block_on(async {
                let shutdown = snikket_runtime::shutdown_on_signals();
                snikket_server::run(config, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "server stopped");
                    ExitCode::from(1)
                }
            }
        }
        Command::Ops(command) => snikket_server::ops::main(&config, &runtime, command),
        Command::CreateInvite(args) => {
            // The command line prints only the link; warnings go to stderr so scripts can parse stdout.
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            match runtime.block_on(cli::create_invite(&config, &args)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
