//! Entry point of the portal container: load the config, start tracing, run until a signal.
//! `snikket-portal healthcheck` is the image's `HEALTHCHECK`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let healthcheck = match snikket_runtime::health::invocation("snikket-portal") {
        Ok(i) => i == snikket_runtime::health::Invocation::Healthcheck,
        Err(code) => return code,
    };
    let config = match snikket_config::Config::load(None) {
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
    if healthcheck {
        return snikket_runtime::health::report(
            runtime.block_on(snikket_portal::healthcheck(&config)),
        );
    }
    snikket_runtime::trace::init(config.log_level);
    for w in &config.warnings {
        tracing::warn!(warning = %w, "configuration");
    }
    let result = runtime.block_on(async {
        let shutdown = snikket_runtime::shutdown_on_signals();
        snikket_portal::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "portal stopped");
            ExitCode::from(1)
        }
    }
}
