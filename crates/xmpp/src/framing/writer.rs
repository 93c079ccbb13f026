//! Bytes we send: stream headers, `<stream:error/>`, the closing tag and stanzas (RFC 6120 §4).

use minidom::Element;

use super::NS_STREAM;

/// `urn:ietf:params:xml:ns:xmpp-streams`
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// Closes our side of the stream.
pub const STREAM_CLOSE: &[u8] = b"</stream:stream>";

/// The attributes of our response stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader<'a> {
    /// Default namespace of the stream (`jabber:client` or `jabber:server`).
    pub content_ns: &'a str,
    /// Our domain.
    pub from: &'a str,
    /// The peer's address, if known (RFC 6120 §4.7.2).
    pub to: Option<&'a str>,
    /// A fresh, unpredictable stream id (RFC 6120 §4.7.3).
    pub id: &'a str,
    /// `xml:lang`, usually the peer's or `en`.
    pub lang: &'a str,
}

/// The XML declaration plus our `<stream:stream>` opening tag, version 1.0.
pub fn stream_header(h: &ResponseHeader<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
    push_escaped(&mut out, h.content_ns);
    out.extend_from_slice(b"' xmlns:stream='");
    out.extend_from_slice(NS_STREAM.as_bytes());
    out.extend_from_slice(b"' from='");
    push_escaped(&mut out, h.from);
    if let Some(to) = h.to {
        out.extend_from_slice(b"' to='");
        push_escaped(&mut out, to);
    }
    out.extend_from_slice(b"' id='");
    push_escaped(&mut out, h.id);
    out.extend_from_slice(b"' version='1.0' xml:lang='");
    push_escaped(&mut out, h.lang);
    out.extend_from_slice(b"'>");
    out
}

/// `<stream:error>` with a condition (e.g. [`crate::StreamError::condition`]) and optional text.
///
/// A condition that is not a lowercase name becomes `undefined-condition`. Follow it with
/// [`STREAM_CLOSE`].
pub fn stream_error(condition: &str, text: Option<&str>) -> Vec<u8> {
    let valid = !condition.is_empty()
        && condition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    let condition = if valid {
        condition
    } else {
        "undefined-condition"
    };
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"<stream:error><");
    out.extend_from_slice(condition.as_bytes());
    out.extend_from_slice(b" xmlns='");
    out.extend_from_slice(NS_STREAM_ERRORS.as_bytes());
    out.extend_from_slice(b"'/>");
    if let Some(text) = text {
        out.extend_from_slice(b"<text xmlns='");
        out.extend_from_slice(NS_STREAM_ERRORS.as_bytes());
        out.extend_from_slice(b"'>");
        push_escaped(&mut out, text);
        out.extend_from_slice(b"</text>");
    }
    out.extend_from_slice(b"</stream:error>");
    out
}

/// Serialises a stanza; its namespace is declared on it (`<message xmlns='jabber:client'>`).
pub fn element_to_bytes(element: &Element) -> Result<Vec<u8>, minidom::Error> {
    let mut out = Vec::new();
    element.write_to(&mut out)?;
    Ok(out)
}

/// Appends `text` escaped for attribute values and character data; characters XML 1.0 forbids
/// (control characters other than tab, CR, LF) are dropped.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '&' => out.extend_from_slice(b"&amp;"),
            '\'' => out.extend_from_slice(b"&apos;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\t' | '\n' | '\r' => out.push(c as u8),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{Event, Limits, StreamParser};

    #[test]
    fn header_round_trips_through_parser() {
        let bytes = stream_header(&ResponseHeader {
            content_ns: "jabber:client",
            from: "example.org",
            to: Some("a&b@example.org"),
            id: "i'd",
            lang: "en",
        });
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' from='example.org' \
             to='a&amp;b@example.org' id='i&apos;d' version='1.0' xml:lang='en'>"
        );
        let mut p = StreamParser::new(Limits::default());
        p.feed(&bytes).unwrap();
        let Some(Event::StreamOpen(h)) = p.next_event().unwrap() else {
            panic!("no stream open")
        };
        assert_eq!(h.to.as_deref(), Some("a&b@example.org"));
        assert_eq!(h.id.as_deref(), Some("i'd"));
        assert_eq!(h.lang.as_deref(), Some("en"));
    }

    #[test]
    fn stream_error_with_escaped_text() {
        let bytes = stream_error("policy-violation", Some("Too <many> & \u{1}more"));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Too &lt;many&gt; &amp; more</text>\
             </stream:error>"
        );
    }

    #[test]
    fn stream_error_rejects_bogus_condition() {
        let bytes = stream_error("x'/><evil", None);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             </stream:error>"
        );
    }

    #[test]
    fn element_serialises_and_reparses() {
        let el: Element = "<message xmlns='jabber:client' to='a@b'><body>1 &lt; 2</body></message>"
            .parse()
            .unwrap();
        let bytes = element_to_bytes(&el).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "<message xmlns='jabber:client' to='a@b'><body>1 &lt; 2</body></message>"
        );
    }

    #[test]
    fn parsed_stanza_round_trips() {
        let stanza = "<message xml:lang='de' to='a@b'><body>Grüße</body>\
                      <x xmlns='urn:x' xmlns:p='urn:p' p:a='1'><y/></x></message>";
        let header = "<stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
        let parse = |body: &[u8]| {
            let mut p = StreamParser::new(Limits::default());
            p.feed(header.as_bytes()).unwrap();
            p.feed(body).unwrap();
            assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
            match p.next_event() {
                Ok(Some(Event::Stanza { element, .. })) => element,
                other => panic!("{other:?}"),
            }
        };
        let first = parse(stanza.as_bytes());
        assert_eq!(first.attr_ns(rxml::Namespace::xml(), "lang"), Some("de"));
        let bytes = element_to_bytes(&first).unwrap();
        let second = parse(&bytes);
        assert_eq!(first, second);
        assert_eq!(
            second
                .get_child("x", "urn:x")
                .unwrap()
                .attr_ns("urn:p", "a"),
            Some("1")
        );
    }
}
