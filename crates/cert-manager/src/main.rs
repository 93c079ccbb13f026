//! `snikket-cert-manager`: the daemon, plus `renew` and `status` commands that talk to it.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "snikket-cert-manager",
    version,
    about = "Snikket certificate manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Ask the running daemon to try to obtain a certificate now and print the outcome.
    Renew,
    /// Print the running daemon's certificate status.
    Status,
    /// The image's HEALTHCHECK: silent when the daemon answers and a certificate is in place.
    Healthcheck,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match snikket_config::Config::load(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            snikket_runtime::trace::init(config.log_level);
            for w in &config.warnings {
                tracing::warn!(warning = %w, "configuration");
            }
            let shutdown = snikket_runtime::shutdown_on_signals();
            match snikket_cert_manager::run(config, shutdown).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "certificate manager failed");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Renew => match snikket_cert_manager::client::renew(&config).await {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Healthcheck => snikket_runtime::health::report(
            snikket_cert_manager::client::healthcheck(&config).await,
        ),
        Command::Status => match snikket_cert_manager::client::status(&config).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
