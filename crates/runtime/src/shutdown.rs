//! Signal handling: SIGTERM or SIGINT cancels a token that every task watches.
//!
//! The pattern is mini-redis's: stop accepting, tell sessions to close, then wait on the
//! `TaskTracker` with a deadline. Nothing sleeps a fixed time hoping work is done.

use std::time::Duration;
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// Returns a token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Closes `tracker` and waits for its tasks, at most `deadline`. Returns whether all finished.
pub async fn drain(tracker: &TaskTracker, deadline: Duration) -> bool {
    tracker.close();
    match tokio::time::timeout(deadline, tracker.wait()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                remaining = tracker.len(),
                "shutdown deadline passed with tasks still running"
            );
            false
        }
    }
}
