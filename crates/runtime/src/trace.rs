//! Tracing setup: human-readable lines on stdout at the configured level.

use snikket_config::LogLevel;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Noisy dependency crates are held at `warn` unless the level is
/// `trace`. Calling it twice is harmless (the second call is ignored).
pub fn init(level: LogLevel) {
    let directive = match level {
        LogLevel::Trace => "trace".to_string(),
        other => format!(
            "{lvl},h2=warn,hyper=warn,hyper_util=warn,rustls=warn,sqlx=warn,tower=warn,reqwest=warn,hickory_proto=warn,hickory_resolver=warn",
            lvl = other.as_filter()
        ),
    };
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(false)
        .try_init();
}
