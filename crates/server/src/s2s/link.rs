//! An authenticated server stream, either direction: writes what the route queue yields and
//! hands what the peer sends to [`super::inbound`] after checking its addresses.

use super::{domain_of, is_local_domain, IDLE, NS_SERVER};
use crate::c2s::conn::{Conn, ConnError};
use crate::state::State;
use snikket_runtime::CancellationToken;
use snikket_xmpp::framing::Event;
use std::collections::HashSet;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How a link ended, for the stanzas still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Closed by us (idle, shutdown) or cleanly by the peer.
    Closed,
    /// The connection failed or the peer broke the protocol.
    Failed,
}

/// Runs an authenticated stream until it ends. `peers` are the domains the peer proved (its
/// stanzas must come from one of them); `rx` is the queue of stanzas for it, when this stream
/// carries our traffic too.
pub(super) async fn run<S: AsyncBufRead + AsyncWrite + Unpin>(
    state: &State,
    conn: &mut Conn<S>,
    peers: &HashSet<String>,
    mut rx: Option<&mut mpsc::Receiver<minidom::Element>>,
    shutdown: &CancellationToken,
) -> End {
    let mut last = Instant::now();
    loop {
        let idle = tokio::time::sleep_until(last + IDLE);
        tokio::select! {
            _ = shutdown.cancelled() => {
                conn.close().await;
                return End::Closed;
            }
            _ = idle => {
                tracing::debug!(?peers, "closing idle server link");
                conn.close().await;
                return End::Closed;
            }
            out = async {
                match rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(stanza) = out else {
                    conn.close().await;
                    return End::Closed;
                };
                last = Instant::now();
                let Some(bytes) = super::to_wire(stanza) else { continue };
                if let Err(e) = conn.send(&bytes).await {
                    tracing::info!(?peers, error = %e, "server link write failed");
                    return End::Failed;
                }
            }
            ev = conn.next() => {
                last = Instant::now();
                match ev {
                    Ok(Event::Stanza { element, .. }) => {
                        if let Err((condition, text)) = check(state, peers, &element) {
                            tracing::info!(?peers, condition, "peer broke the rules; closing");
                            conn.fail(condition, Some(text)).await;
                            return End::Failed;
                        }
                        if matches!(element.name(), "message" | "presence" | "iq") {
                            let stanza = super::renamespace(element, NS_SERVER, crate::xml::NS_CLIENT);
                            super::inbound::from_remote(state, stanza).await;
                        }
                    }
                    Ok(Event::StreamClose) => {
                        conn.close().await;
                        return End::Closed;
                    }
                    Ok(Event::StreamOpen(_)) => {
                        conn.fail("unsupported-stanza-type", None).await;
                        return End::Failed;
                    }
                    Err(ConnError::Stream(e)) => {
                        conn.fail(e.condition(), None).await;
                        return End::Failed;
                    }
                    Err(e) => {
                        tracing::debug!(?peers, error = %e, "server link ended");
                        return End::Failed;
                    }
                }
            }
        }
    }
}

/// A peer's stanza must come from a domain it proved and go to one of ours (RFC 6120 §4.9.3).
fn check(
    state: &State,
    peers: &HashSet<String>,
    stanza: &minidom::Element,
) -> Result<(), (&'static str, &'static str)> {
    if !matches!(stanza.name(), "message" | "presence" | "iq") {
        return Err(("unsupported-stanza-type", "Only stanzas are accepted here"));
    }
    let (Some(from), Some(to)) = (stanza.attr("from"), stanza.attr("to")) else {
        return Err((
            "improper-addressing",
            "Stanzas between servers need a from and a to",
        ));
    };
    let from = domain_of(from);
    if !from.is_some_and(|f| peers.contains(&f)) {
        return Err((
            "invalid-from",
            "The sender's domain is not the one this stream authenticated",
        ));
    }
    let to = domain_of(to);
    if !to.is_some_and(|t| is_local_domain(state, &t)) {
        return Err(("host-unknown", "This server does not serve that domain"));
    }
    Ok(())
}
