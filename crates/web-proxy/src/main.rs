//! `snikket-web-proxy`: loads the configuration, starts tracing and runs the proxy until a signal.

#[tokio::main]
async fn main() {
    let config = match snikket_config::Config::load(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("snikket-web-proxy: {e}");
            std::process::exit(1);
        }
    };
    snikket_runtime::trace::init(config.log_level);
    for w in &config.warnings {
        tracing::warn!(warning = %w, "configuration");
    }
    let shutdown = snikket_runtime::shutdown_on_signals();
    if let Err(e) = snikket_web_proxy::run(config, shutdown).await {
        tracing::error!(error = format!("{e:#}"), "web proxy stopped");
        eprintln!("snikket-web-proxy: {e:#}");
        std::process::exit(1);
    }
}
