//! External service discovery (XEP-0215): STUN and TURN entries with TURN REST credentials
//! (spec 3.7), so calls can be relayed by our TURN server. Only local users ever ask (c2s).

use crate::state::State;
use crate::xml::{self, el};
use base64::Engine;
use hmac::{Hmac, Mac};
use minidom::Element;

/// `urn:xmpp:extdisco:2`.
pub const NS_EXTDISCO: &str = "urn:xmpp:extdisco:2";
/// Credentials stay valid for a day, like Prosody's `mod_turn_external`.
pub const TTL_SECS: i64 = 86_400;

/// TURN REST API credentials: username = expiry timestamp, password = base64(HMAC-SHA1(secret, username)).
pub fn credentials(secret: &str, expires: i64) -> (String, String) {
    let username = expires.to_string();
    let password = match Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => String::new(),
    };
    (username, password)
}

/// The `<services/>` answer: STUN and TURN over UDP and TCP on the advertised host and port.
pub fn services(state: &State, iq: &Element) -> Element {
    let turn = &state.config.turn;
    let Some(secret) = state
        .turn_secret
        .as_ref()
        .filter(|_| turn.enabled || turn.external_domain)
    else {
        return xml::iq_result(iq, Some(el("services", NS_EXTDISCO, &[], vec![])));
    };
    let requested = xml::payload(iq)
        .and_then(|p| p.attr("type"))
        .map(str::to_string);
    let expires = snikket_store::now() + TTL_SECS;
    let (username, password) = credentials(secret.expose(), expires);
    let port = turn.port.to_string();
    let expiry = crate::archive::stamp(expires);
    let mut out = Vec::new();
    for kind in ["stun", "turn"] {
        if requested.as_deref().is_some_and(|r| r != kind) {
            continue;
        }
        for transport in ["udp", "tcp"] {
            let mut attrs: Vec<(&str, &str)> = vec![
                ("type", kind),
                ("host", &turn.domain),
                ("port", &port),
                ("transport", transport),
            ];
            if kind == "turn" {
                attrs.extend([
                    ("username", username.as_str()),
                    ("password", password.as_str()),
                    ("expires", expiry.as_str()),
                    ("restricted", "1"),
                ]);
            }
            out.push(el("service", NS_EXTDISCO, &attrs, vec![]));
        }
    }
    xml::iq_result(iq, Some(el("services", NS_EXTDISCO, &[], out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_match_coturn() {
        // Computed independently: printf 1700000000 | openssl dgst -sha1 -hmac secret -binary | base64
        let (u, p) = credentials("secret", 1_700_000_000);
        assert_eq!(u, "1700000000");
        assert_eq!(p, "WGw37+g43pfwVUmrc9tgArn/juE=");
    }
}
