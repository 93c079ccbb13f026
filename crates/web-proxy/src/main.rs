//! `snikket-web-proxy`: loads the configuration, starts tracing and runs the proxy until a signal.
//! `snikket-web-proxy healthcheck` is the image's `HEALTHCHECK`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let healthcheck = match snikket_runtime::health::invocation("snikket-web-proxy") {
        Ok(i) => i == snikket_runtime::health::Invocation::Healthcheck,
        Err(code) => return code,
    };
    let config = match snikket_config::Config::load(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("snikket-web-proxy: {e}");
            return ExitCode::from(1);
        }
    };
    if healthcheck {
        return snikket_runtime::health::report(snikket_web_proxy::healthcheck(&config).await);
    }
    snikket_runtime::trace::init(config.log_level);
    for w in &config.warnings {
        tracing::warn!(warning = %w, "configuration");
    }
    let shutdown = snikket_runtime::shutdown_on_signals();
    if let Err(e) = snikket_web_proxy::run(config, shutdown).await {
        tracing::error!(error = format!("{e:#}"), "web proxy stopped");
        eprintln!("snikket-web-proxy: {e:#}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
