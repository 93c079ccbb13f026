//! Legacy vCards (XEP-0054) mapped onto personal eventing, as Prosody's `mod_vcard_legacy`
//! does: a `vcard-temp` get is built from the vCard4 node (XEP-0292) and the avatar nodes
//! (XEP-0084); a set is published to them. The domain's own vCard carries the site name.

use crate::pep;
use crate::routing::Sender;
use crate::state::State;
use crate::xml::{self, el, text_el};
use base64::Engine;
use minidom::Element;
use sha1::Digest;

/// `vcard-temp`.
pub const NS_VCARD: &str = "vcard-temp";
const NS_VCARD4: &str = "urn:ietf:params:xml:ns:vcard-4.0";
const NODE_VCARD4: &str = "urn:xmpp:vcard4";
const NODE_DATA: &str = "urn:xmpp:avatar:data";
const NODE_META: &str = "urn:xmpp:avatar:metadata";

/// `vcard-temp` get or set for `owner`'s account (`me` is the requester).
pub async fn iq(state: &State, me: &Sender, owner: &str, iq: &Element) -> Element {
    match iq.attr("type") {
        Some("get") => get(state, me, owner, iq).await,
        Some("set") if owner == me.username => set(state, me, iq).await,
        _ => xml::error_reply(iq, "forbidden", None),
    }
}

/// The server's avatar (drawn by `assets/make-logo.py`).
const LOGO: &[u8] = include_bytes!("../assets/logo.png");

/// Hex SHA-1 of the server's avatar, as `vcard-temp:x:update` carries it.
pub fn logo_hash() -> String {
    hex(&sha1::Sha1::digest(LOGO))
}

/// The domain's vCard: its name and logo (XEP-0054).
pub fn server(state: &State, iq: &Element) -> Element {
    let photo = el(
        "PHOTO",
        NS_VCARD,
        &[],
        vec![
            text_el("TYPE", NS_VCARD, "image/png"),
            text_el(
                "BINVAL",
                NS_VCARD,
                &base64::engine::general_purpose::STANDARD.encode(LOGO),
            ),
        ],
    );
    let card = el(
        "vCard",
        NS_VCARD,
        &[],
        vec![text_el("FN", NS_VCARD, &state.config.site_name), photo],
    );
    xml::iq_result(iq, Some(card))
}

/// What a session gets from the domain at its initial presence (XEP-0153): the hash of the
/// server's avatar, so apps show it for messages from the server.
pub fn server_photo_presence(domain: &str, to: &str) -> Element {
    el(
        "presence",
        xml::NS_CLIENT,
        &[("from", domain), ("to", to), ("type", "unavailable")],
        vec![el(
            "x",
            NS_UPDATE,
            &[],
            vec![text_el("photo", NS_UPDATE, &logo_hash())],
        )],
    )
}

async fn get(state: &State, me: &Sender, owner: &str, iq: &Element) -> Element {
    let mut children = Vec::new();
    match pep::read_items(state, owner, me, NODE_VCARD4, iq).await {
        Ok(Some(items)) => {
            if let Some((_, card)) = items.last() {
                children.extend(from_vcard4(card));
            }
        }
        Ok(None) => {}
        Err(reply) => return reply,
    }
    if let Ok(Some(meta)) = pep::read_items(state, owner, me, NODE_META, iq).await {
        let info = meta
            .last()
            .and_then(|(_, m)| m.get_child("info", NODE_META).cloned());
        if let Some(info) = info {
            let id = info.attr("id").unwrap_or_default();
            let data = match pep::read_items(state, owner, me, NODE_DATA, iq).await {
                Ok(Some(d)) => d.into_iter().find(|(i, _)| i == id).map(|(_, e)| e.text()),
                _ => None,
            };
            if let Some(binval) = data {
                let mime = info.attr("type").unwrap_or("image/png");
                children.push(el(
                    "PHOTO",
                    NS_VCARD,
                    &[],
                    vec![
                        text_el("TYPE", NS_VCARD, mime),
                        text_el("BINVAL", NS_VCARD, &binval),
                    ],
                ));
            }
        }
    }
    xml::iq_result(iq, Some(el("vCard", NS_VCARD, &[], children)))
}

/// vcard-temp fields from a vCard4 element (the ones clients show).
fn from_vcard4(card: &Element) -> Vec<Element> {
    let text = |name: &str| {
        card.get_child(name, NS_VCARD4)
            .and_then(|f| f.get_child("text", NS_VCARD4))
            .map(Element::text)
            .filter(|t| !t.is_empty())
    };
    let mut out = Vec::new();
    if let Some(fn_) = text("fn") {
        out.push(text_el("FN", NS_VCARD, &fn_));
    }
    if let Some(nick) = text("nickname") {
        out.push(text_el("NICKNAME", NS_VCARD, &nick));
    }
    if let Some(note) = text("note") {
        out.push(text_el("DESC", NS_VCARD, &note));
    }
    out
}

/// A vCard4 element from vcard-temp's FN, NICKNAME and DESC.
fn to_vcard4(card: &Element) -> Element {
    let mut out = Vec::new();
    for (legacy, modern) in [("FN", "fn"), ("NICKNAME", "nickname"), ("DESC", "note")] {
        if let Some(v) = card
            .get_child(legacy, NS_VCARD)
            .map(Element::text)
            .filter(|t| !t.trim().is_empty())
        {
            out.push(el(
                modern,
                NS_VCARD4,
                &[],
                vec![text_el("text", NS_VCARD4, &v)],
            ));
        }
    }
    el("vcard", NS_VCARD4, &[], out)
}

/// A photo from vcard-temp: (sha1 hex id, mime type, bytes, base64 as stored).
fn photo(card: &Element) -> Option<Result<(String, String, usize, String), ()>> {
    let p = card.get_child("PHOTO", NS_VCARD)?;
    let b64: String = p
        .get_child("BINVAL", NS_VCARD)?
        .text()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if b64.is_empty() {
        return None;
    }
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&b64) else {
        return Some(Err(()));
    };
    let id = hex(&sha1::Sha1::digest(&bytes));
    let mime = p
        .get_child("TYPE", NS_VCARD)
        .map(Element::text)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "image/png".into());
    Some(Ok((id, mime, bytes.len(), b64)))
}

/// Publishes an avatar (XEP-0084): the data item, then the metadata pointing at it. New nodes
/// get `defaults`.
pub async fn publish_avatar(
    state: &State,
    user: &str,
    defaults: &[(&str, &str)],
    id: &str,
    mime: &str,
    len: usize,
    b64: &str,
) -> Result<(), snikket_store::StoreError> {
    let data = text_el("data", NODE_DATA, b64);
    pep::publish_as(state, user, NODE_DATA, defaults, id, &data).await?;
    let info = el(
        "info",
        NODE_META,
        &[("id", id), ("type", mime), ("bytes", &len.to_string())],
        vec![],
    );
    let meta = el("metadata", NODE_META, &[], vec![info]);
    pep::publish_as(state, user, NODE_META, defaults, id, &meta).await
}

/// Lower-case hex, as XEP-0084 ids are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn set(state: &State, me: &Sender, iq: &Element) -> Element {
    let Some(card) = xml::payload(iq).filter(|c| c.is("vCard", NS_VCARD)) else {
        return xml::error_reply(iq, "bad-request", None);
    };
    let photo = match photo(card) {
        Some(Err(())) => {
            return xml::error_reply(iq, "bad-request", Some("The photo is not valid base64"))
        }
        Some(Ok(p)) if p.3.len() > pep::MAX_PAYLOAD => {
            return xml::error_reply(iq, "not-acceptable", Some("The photo is too big"))
        }
        other => other.and_then(Result::ok),
    };
    let user = &me.username;
    let mut result =
        pep::publish_as(state, user, NODE_VCARD4, &[], "current", &to_vcard4(card)).await;
    if let (Ok(()), Some((id, mime, len, b64))) = (&result, photo) {
        result = publish_avatar(state, user, &[], &id, &mime, len, &b64).await;
    }
    match result {
        Ok(()) => xml::iq_result(iq, None),
        Err(e) => {
            tracing::error!(error = %e, "vcard conversion failed");
            xml::error_reply(iq, "internal-server-error", None)
        }
    }
}

const NS_UPDATE: &str = "vcard-temp:x:update";

/// XEP-0153: an available presence without `<x xmlns='vcard-temp:x:update'/>` gets the hash
/// of the user's PEP avatar, so clients that follow vCard avatars see it too (Prosody's
/// `mod_vcard_legacy` does the same). A client that sets the element itself is left alone.
pub async fn with_photo_hash(state: &State, username: &str, mut presence: Element) -> Element {
    if presence.has_child("x", NS_UPDATE) {
        return presence;
    }
    let items = match state.store.pep_items(username, NODE_META, &[], 1).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "avatar lookup for presence failed");
            return presence;
        }
    };
    let id = items
        .first()
        .and_then(|i| i.payload.parse::<Element>().ok())
        .and_then(|m| {
            m.get_child("info", NODE_META)
                .and_then(|i| i.attr("id"))
                .map(str::to_string)
        });
    if let Some(id) = id {
        presence.append_child(el(
            "x",
            NS_UPDATE,
            &[],
            vec![text_el("photo", NS_UPDATE, &id)],
        ));
    }
    presence
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_fields_and_photo_convert() {
        let card: Element =
            "<vCard xmlns='vcard-temp'><FN>Ivy Example</FN><NICKNAME>ivy</NICKNAME>\
            <PHOTO><TYPE>image/png</TYPE><BINVAL>aGVs\nbG8=</BINVAL></PHOTO></vCard>"
                .parse()
                .unwrap();
        let v4 = to_vcard4(&card);
        let back = from_vcard4(&v4);
        let names: Vec<(String, String)> = back
            .iter()
            .map(|e| (e.name().to_string(), e.text()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("FN".to_string(), "Ivy Example".to_string()),
                ("NICKNAME".to_string(), "ivy".to_string())
            ]
        );
        let (id, mime, len, b64) = photo(&card).unwrap().unwrap();
        assert_eq!(
            id, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
            "sha1 of 'hello'"
        );
        assert_eq!(
            (mime.as_str(), len, b64.as_str()),
            ("image/png", 5, "aGVsbG8=")
        );
        let bad: Element = "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!</BINVAL></PHOTO></vCard>"
            .parse()
            .unwrap();
        assert!(matches!(photo(&bad), Some(Err(()))));
        let none: Element = "<vCard xmlns='vcard-temp'/>".parse().unwrap();
        assert!(photo(&none).is_none());
    }
}
