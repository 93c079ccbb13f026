//! Invite-only in-band registration (XEP-0077 with XEP-0401/XEP-0445 `preauth`, spec 3.3).

use crate::c2s::negotiate::mechanism_name;
use crate::state::State;
use crate::xml::{self, el, NS_CLIENT};
use minidom::Element;
use snikket_store::{Credential, Invite, InviteKind, StoreError};
use snikket_xmpp::scram::{ScramHash, StoredCredentials};

const NS_REGISTER: &str = "jabber:iq:register";
const NS_PARS: &str = "urn:xmpp:pars:0";

/// Registration state of one unauthenticated stream: the invite validated on it, if any.
#[derive(Default)]
pub struct Registration {
    invite: Option<Invite>,
}

/// Salted SCRAM verifiers for both hashes we offer.
pub fn credentials_for(password: &str) -> Result<Vec<Credential>, snikket_xmpp::ScramError> {
    let mut out = Vec::with_capacity(2);
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let c = StoredCredentials::new_random(hash, password)?;
        out.push(Credential {
            mechanism: mechanism_name(hash).to_string(),
            salt: c.salt,
            iterations: c.iterations,
            stored_key: c.stored_key,
            server_key: c.server_key,
        });
    }
    Ok(out)
}

/// Answers an IQ sent before authentication: `preauth` token checks and registration.
pub async fn handle_pre_auth(iq: &Element, reg: &mut Registration, state: &State) -> Element {
    let kind = iq.attr("type").unwrap_or("");
    if let Some(preauth) = iq.get_child("preauth", NS_PARS).filter(|_| kind == "set") {
        return match check_token(preauth.attr("token").unwrap_or(""), state).await {
            Ok(invite) => {
                reg.invite = Some(invite);
                xml::iq_result(iq, None)
            }
            Err(reply) => xml::error_reply(iq, reply.0, Some(reply.1)),
        };
    }
    let Some(query) = iq.get_child("query", NS_REGISTER) else {
        return xml::error_reply(iq, "service-unavailable", None);
    };
    match kind {
        "get" => {
            let mut fields = vec![
                xml::text_el(
                    "instructions",
                    NS_REGISTER,
                    "Choose a username and password to register with this server",
                ),
                el("username", NS_REGISTER, &[], vec![]),
                el("password", NS_REGISTER, &[], vec![]),
            ];
            if let Some(u) = reg.invite.as_ref().and_then(|i| i.username.clone()) {
                fields[1] = xml::text_el("username", NS_REGISTER, &u);
            }
            xml::iq_result(iq, Some(el("query", NS_REGISTER, &[], fields)))
        }
        "set" => match register(query, reg, state).await {
            Ok(()) => xml::iq_result(iq, None),
            Err((condition, text)) => xml::error_reply(iq, condition, Some(&text)),
        },
        _ => xml::error_reply(iq, "bad-request", None),
    }
}

async fn check_token(token: &str, state: &State) -> Result<Invite, (&'static str, &'static str)> {
    const BAD: (&str, &str) = ("forbidden", "The invite token is invalid or expired");
    match state.store.check_invite(token).await {
        Ok(Ok(invite)) if invite.kind != InviteKind::Contact || invite.inviter.is_some() => {
            Ok(invite)
        }
        Ok(_) => Err(BAD),
        Err(e) => {
            tracing::error!(error = %e, "invite lookup failed");
            Err(("internal-server-error", "Internal error"))
        }
    }
}

async fn register(
    query: &Element,
    reg: &mut Registration,
    state: &State,
) -> Result<(), (&'static str, String)> {
    if query.has_child("remove", NS_REGISTER) {
        return Err(("not-allowed", "Log in first to delete your account".into()));
    }
    // XEP-0445: the token may also come inside the query.
    if reg.invite.is_none() {
        if let Some(p) = query.get_child("preauth", NS_PARS) {
            let invite = check_token(p.attr("token").unwrap_or(""), state)
                .await
                .map_err(|(c, t)| (c, t.to_string()))?;
            reg.invite = Some(invite);
        }
    }
    let Some(invite) = reg.invite.clone() else {
        return Err((
            "not-acceptable",
            "Registration on this server is through invitation only".into(),
        ));
    };
    let username = query
        .get_child("username", NS_REGISTER)
        .map(Element::text)
        .unwrap_or_default();
    let password = query
        .get_child("password", NS_REGISTER)
        .map(Element::text)
        .unwrap_or_default();
    let username = snikket_xmpp::account::validate_localpart(username.trim()).map_err(|_| {
        (
            "not-acceptable",
            "The requested username is invalid.".to_string(),
        )
    })?;
    snikket_xmpp::account::check_password(&password, Some(&username))
        .map_err(|e| ("not-acceptable", e.text().to_string()))?;
    let creds = credentials_for(&password).map_err(|_| {
        (
            "not-acceptable",
            "The password is not acceptable".to_string(),
        )
    })?;
    let store = &state.store;
    if invite.kind == InviteKind::Reset {
        if invite.username.as_deref() != Some(username.as_str()) {
            return Err((
                "not-allowed",
                "Incorrect username for password reset".into(),
            ));
        }
        store
            .use_invite(&invite.invite_id)
            .await
            .map_err(internal)?;
        store
            .set_credentials(&username, &creds)
            .await
            .map_err(internal)?;
        tracing::info!(user = %username, "password reset through invite");
        reg.invite = None;
        return Ok(());
    }
    if let Some(fixed) = &invite.username {
        if fixed != &username {
            return Err((
                "not-allowed",
                "The chosen username is not valid with this invitation".into(),
            ));
        }
    }
    match store.account(&username).await {
        Ok(Some(_)) => return Err(("conflict", "The requested username already exists.".into())),
        Ok(None) => {}
        Err(e) => return Err(internal(e)),
    }
    // Consume before creating: a single-use invite must never create two accounts.
    match store.use_invite(&invite.invite_id).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(("forbidden", "The invite token is invalid or expired".into()));
        }
        Err(e) => return Err(internal(e)),
    }
    match store
        .create_account(&username, invite.role, &creds, Some(&invite.invite_id))
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(("conflict", "The requested username already exists.".into()));
        }
        Err(e) => return Err(internal(e)),
    }
    let domain = &state.config.domain.ascii;
    for change in crate::onboarding::after_registration(store, domain, &username, &invite).await {
        crate::routing::push_item(state, &change.owner, &change.item, change.version, false);
    }
    tracing::info!(user = %username, invite = %invite.invite_id, "account registered");
    reg.invite = None;
    Ok(())
}

fn internal(e: StoreError) -> (&'static str, String) {
    tracing::error!(error = %e, "registration failed");
    ("internal-server-error", "Internal error".into())
}

/// The `jabber:client` namespace, re-exported for callers building replies.
pub const NS: &str = NS_CLIENT;
