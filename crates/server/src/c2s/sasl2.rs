//! SASL2 (XEP-0388) with its inline features: Bind 2 (XEP-0386, with inline carbons and stream
//! management), stream resumption (XEP-0198 §inline) and FAST tokens (XEP-0484).
//!
//! The SCRAM exchange, the account checks and the failure throttling are `negotiate`'s, shared
//! with RFC 6120 SASL; this module adds the `<authenticate/>` envelope, token logins, and what
//! happens after success: there is no stream restart, and with Bind 2 the session starts at once.

use crate::c2s::conn::Conn;
use crate::c2s::fast::{self, HtMechanism, NS_FAST};
use crate::c2s::negotiate::{
    account_may_log_in, auth_failed, bind_loop, post_auth_features, register_session,
    scram_exchange, send_failure, session_limits, Bound, Profile, SaslOutcome, Tls,
};
use crate::c2s::sm::{self, InlineEnable, Resumption, NS_SM};
use crate::state::State;
use crate::xml::{self, el};
use minidom::Element;
use snikket_xmpp::scram::{self, ChannelBinding};
use std::net::SocketAddr;
use std::sync::Arc;

/// `urn:xmpp:sasl:2`.
pub const NS_SASL2: &str = "urn:xmpp:sasl:2";
/// `urn:xmpp:bind:0` (Bind 2).
pub const NS_BIND2: &str = "urn:xmpp:bind:0";
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// Longest client id (`<user-agent id>`) accepted.
const MAX_CLIENT_ID: usize = 128;

/// The `<authentication/>` stream feature: the SCRAM mechanisms and the inline features.
pub fn feature(cb: &[ChannelBinding]) -> Element {
    let mut children: Vec<Element> = scram::mechanisms(!cb.is_empty())
        .into_iter()
        .map(|m| xml::text_el("mechanism", NS_SASL2, m))
        .collect();
    let bind_inline = [NS_CARBONS, NS_SM]
        .into_iter()
        .map(|var| el("feature", NS_BIND2, &[("var", var)], vec![]))
        .collect();
    let fast_mechs = HtMechanism::available(cb)
        .into_iter()
        .map(|m| xml::text_el("mechanism", NS_FAST, m.name()))
        .collect();
    children.push(el(
        "inline",
        NS_SASL2,
        &[],
        vec![
            el(
                "bind",
                NS_BIND2,
                &[],
                vec![el("inline", NS_BIND2, &[], bind_inline)],
            ),
            el("sm", NS_SM, &[], vec![]),
            el("fast", NS_FAST, &[], fast_mechs),
        ],
    ));
    el("authentication", NS_SASL2, &[], children)
}

/// A successful SASL2 authentication, before the `<success/>` is sent.
pub(super) struct Authenticated {
    username: String,
    /// Server's final data (`<additional-data/>`).
    additional: Vec<u8>,
    /// `<user-agent id>`.
    client_id: Option<String>,
    /// The SHA-256 of the FAST token this login used.
    token_used: Option<Vec<u8>>,
}

fn client_id(auth: &Element) -> Option<String> {
    auth.get_child("user-agent", NS_SASL2)
        .and_then(|u| u.attr("id"))
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= MAX_CLIENT_ID)
        .map(str::to_string)
}

/// Runs the authentication exchange of `<authenticate/>`; failures are answered here.
pub(super) async fn authenticate(
    conn: &mut Conn<Tls>,
    auth: &Element,
    cb: &[ChannelBinding],
    state: &State,
    peer: SocketAddr,
) -> Result<Authenticated, SaslOutcome> {
    let p = Profile::Sasl2;
    let client_id = client_id(auth);
    if client_id.is_none() && state.config.server.require_sasl2 {
        let f = p.failure("malformed-request", Some("A client id is required"));
        return Err(send_failure(conn, f).await);
    }
    let mechanism = auth.attr("mechanism").unwrap_or("");
    let initial = auth
        .get_child("initial-response", NS_SASL2)
        .map(Element::text);
    if let Some(ht) = HtMechanism::from_name(mechanism) {
        return token_login(conn, ht, initial, client_id, cb, state, peer).await;
    }
    let (username, additional) =
        scram_exchange(conn, p, mechanism, initial.as_deref(), cb, state, peer).await?;
    Ok(Authenticated {
        username,
        additional,
        client_id,
        token_used: None,
    })
}

/// An `HT-SHA-256-*` login with a FAST token of this client.
async fn token_login(
    conn: &mut Conn<Tls>,
    ht: HtMechanism,
    initial: Option<String>,
    client_id: Option<String>,
    cb: &[ChannelBinding],
    state: &State,
    peer: SocketAddr,
) -> Result<Authenticated, SaslOutcome> {
    let p = Profile::Sasl2;
    let Some(cb_data) = ht.cb_data(cb) else {
        return Err(send_failure(conn, p.failure("invalid-mechanism", None)).await);
    };
    let Ok(raw) = scram::decode_payload(initial.as_deref().unwrap_or("")) else {
        return Err(send_failure(conn, p.failure("incorrect-encoding", None)).await);
    };
    let Some((user, proof)) = fast::parse_initial(&raw) else {
        return Err(send_failure(conn, p.failure("malformed-request", None)).await);
    };
    let username = snikket_xmpp::account::validate_localpart(&user).ok();
    let tokens = match (&username, &client_id) {
        (Some(u), Some(c)) => match state.store.fast_tokens(u, c).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "fast token lookup failed");
                let f = p.failure("temporary-auth-failure", None);
                return Err(send_failure(conn, f).await);
            }
        },
        _ => Vec::new(),
    };
    let key = state.fast_key.expose().as_bytes();
    let unseal =
        |u: &str, c: &str, t: &snikket_store::FastToken| fast::seal(key, u, c, &t.token_hash);
    let matched = match (&username, &client_id) {
        (Some(u), Some(c)) => tokens
            .into_iter()
            .find(|t| fast::verify(&unseal(u, c, t), &cb_data, &proof)),
        _ => None,
    };
    let (Some(username), Some(client), Some(token)) = (username, client_id.as_deref(), matched)
    else {
        return Err(auth_failed(conn, p, "not-authorized", &user, state, peer).await);
    };
    account_may_log_in(conn, p, &username, state, peer).await?;
    if let Err(e) = state
        .store
        .fast_token_used(&username, client, &token.token_hash)
        .await
    {
        tracing::warn!(error = %e, "retiring older fast tokens failed");
    }
    Ok(Authenticated {
        additional: fast::responder(&unseal(&username, client, &token), &cb_data),
        username,
        client_id,
        token_used: Some(token.token_hash),
    })
}

/// Sends the `<success/>` with what the inline requests asked for, then either hands the
/// connection to a resumed session, starts the Bind 2 session, or waits for legacy binding on
/// the same stream (no restart).
pub(super) async fn finish(
    mut conn: Conn<Tls>,
    auth: Authenticated,
    request: &Element,
    cb: &[ChannelBinding],
    state: &Arc<State>,
) -> Option<Bound> {
    let Authenticated {
        username,
        additional,
        client_id,
        token_used,
    } = auth;
    tracing::debug!(user = %username, fast = token_used.is_some(), "authenticated with sasl2");
    conn.set_limits(session_limits());
    let bare = format!("{username}@{}", state.config.domain.ascii);
    let mut extra = Vec::new();
    if let Some(token) = issue_token(
        request,
        &username,
        client_id.as_deref(),
        token_used.as_deref(),
        cb,
        state,
    )
    .await
    {
        extra.push(token);
    }
    let invalidate = request
        .get_child("fast", NS_FAST)
        .is_some_and(|f| matches!(f.attr("invalidate"), Some("true") | Some("1")));
    if let (true, Some(hash), Some(client)) = (invalidate, &token_used, &client_id) {
        if let Err(e) = state.store.revoke_fast_token(&username, client, hash).await {
            tracing::warn!(error = %e, "revoking a fast token failed");
        }
    }
    let success = |jid: &str, extra: Vec<Element>| {
        let mut children = Vec::new();
        if !additional.is_empty() {
            children.push(xml::text_el(
                "additional-data",
                NS_SASL2,
                &scram::encode_payload(&additional),
            ));
        }
        children.push(xml::text_el("authorization-identifier", NS_SASL2, jid));
        children.extend(extra);
        el("success", NS_SASL2, &[], children)
    };
    if let Some(resume) = request.get_child("resume", NS_SM) {
        let previd = resume.attr("previd").unwrap_or("").to_string();
        let h = resume.attr("h").and_then(|h| h.parse::<u32>().ok());
        if let Some(h) = h {
            let r = Resumption {
                conn,
                h,
                success: Some(success(&bare, extra.clone())),
            };
            match state.sm.resume(&previd, &username, r) {
                Ok(()) => return None,
                Err(back) => conn = back.conn,
            }
        }
        extra.push(el(
            "failed",
            NS_SM,
            &[],
            vec![el("item-not-found", xml::NS_STANZAS, &[], vec![])],
        ));
    }
    let Some(bind) = request.get_child("bind", NS_BIND2) else {
        conn.send_el(&success(&bare, extra)).await.ok()?;
        conn.send_el(&post_auth_features(state)).await.ok()?;
        return bind_loop(conn, username, state).await;
    };
    let tag = bind.get_child("tag", NS_BIND2).map(Element::text);
    let resource = fast::bind2_resource(tag.as_deref(), &username, client_id.as_deref());
    let (rx, session_id) = register_session(&mut conn, &username, &resource, state).await?;
    let mut bound = el("bound", NS_BIND2, &[], vec![]);
    if bind.get_child("enable", NS_CARBONS).is_some() {
        state.router.set_carbons(&username, &resource, true);
    }
    let sm = bind.get_child("enable", NS_SM).map(|e| {
        let enable = InlineEnable {
            id: crate::archive::new_stanza_id(),
            resume: sm::wants_resume(e),
        };
        bound.append_child(sm::enabled_element(&enable.id, enable.resume));
        enable
    });
    extra.push(bound);
    let full = format!("{bare}/{resource}");
    if conn.send_el(&success(&full, extra)).await.is_err() {
        state.router.unregister(&username, &resource, session_id);
        return None;
    }
    Some(Bound {
        conn,
        username,
        resource,
        rx,
        session_id,
        sm,
    })
}

/// `<token/>` for a `<request-token/>` naming a mechanism this connection offers; needs a
/// client id. The token used for this login stays valid until the new one is used.
async fn issue_token(
    request: &Element,
    username: &str,
    client_id: Option<&str>,
    token_used: Option<&[u8]>,
    cb: &[ChannelBinding],
    state: &State,
) -> Option<Element> {
    let wanted = request.get_child("request-token", NS_FAST)?;
    let mechanism = HtMechanism::from_name(wanted.attr("mechanism").unwrap_or(""))
        .filter(|m| m.cb_data(cb).is_some())?;
    let client = client_id?;
    let (token, hash) = fast::new_token();
    let hash = fast::seal(state.fast_key.expose().as_bytes(), username, client, &hash);
    let expires = snikket_store::now() + fast::TOKEN_TTL_SECS;
    if let Err(e) = state
        .store
        .issue_fast_token(username, client, &hash, expires, token_used)
        .await
    {
        tracing::warn!(error = %e, "storing a fast token failed");
        return None;
    }
    tracing::debug!(user = %username, mechanism = mechanism.name(), "fast token issued");
    let expiry = crate::archive::stamp(expires);
    Some(el(
        "token",
        NS_FAST,
        &[("expiry", &expiry), ("token", &token)],
        vec![],
    ))
}
