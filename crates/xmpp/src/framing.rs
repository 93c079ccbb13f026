//! Incremental XMPP stream parser over rxml with hard limits (RFC 6120 §4, XEP-0478).
//!
//! Feed arbitrary byte chunks with [`StreamParser::feed`], then pull [`Event`]s with
//! [`StreamParser::next_event`] until it returns `Ok(None)`:
//!
//! ```
//! use snikket_xmpp::framing::{Event, Limits, StreamParser};
//! # fn main() -> Result<(), snikket_xmpp::StreamError> {
//! let mut parser = StreamParser::new(Limits::default());
//! parser.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>")?;
//! parser.feed(b"<message to='a@example.org'><body>hi</body></message>")?;
//! assert!(matches!(parser.next_event()?, Some(Event::StreamOpen(h)) if h.to.as_deref() == Some("example.org")));
//! assert!(matches!(parser.next_event()?, Some(Event::Stanza { bytes: 53, .. })));
//! assert_eq!(parser.next_event()?, None); // need more data
//! # Ok(()) }
//! ```
//!
//! Every error is fatal and sticky: send [`writer::stream_error`] with
//! [`StreamError::condition`] and close.
//! Stream restarts (after STARTTLS and SASL success) use a fresh parser; take the bytes that
//! followed the triggering element with [`StreamParser::into_unparsed`]. After `<proceed/>`
//! they must be empty (anything else is plaintext injected before the TLS handshake).
//!
//! Memory is bounded: the input buffer by [`Limits::max_buffered_bytes`], everything rxml holds
//! for an unfinished stanza (partial tokens, attributes of an open tag, the element tree) by
//! [`Limits::max_stanza_bytes`]. Each input byte is handled a constant number of times.

pub mod writer;

use minidom::Element;
use rxml::{Parse, WithOptions};

pub use crate::error::StreamError;

/// `http://etherx.jabber.org/streams`
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// `jabber:client`
pub const NS_CLIENT: &str = "jabber:client";
/// `jabber:server`
pub const NS_SERVER: &str = "jabber:server";

/// Bytes handed to rxml per step, so budgets are checked while a huge tag is still arriving.
const WINDOW: usize = 4096;

/// Hard limits of one stream. All are checked before the data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest stanza (top-level element) in wire bytes; also bounds the stream header.
    /// Advertise it with XEP-0478 `<limits><max-bytes>`.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza; the stanza element itself is depth 1.
    pub max_depth: usize,
    /// Most attributes (not counting namespace declarations) on one element.
    pub max_attributes: usize,
    /// Most elements in one stanza, counting the stanza itself. A parsed element costs far
    /// more memory than its wire bytes (`<a/>` is 4 bytes), so bytes alone do not bound memory.
    pub max_elements: usize,
    /// Most unparsed bytes [`StreamParser::feed`] accepts before events are pulled.
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    /// Prosody's c2s stanza limit (256 KiB) and generous structural limits.
    fn default() -> Limits {
        Limits {
            max_stanza_bytes: 262_144,
            max_depth: 32,
            max_attributes: 64,
            max_elements: 4096,
            max_buffered_bytes: 524_288,
        }
    }
}

impl Limits {
    /// Tighter limits for streams before authentication (pre-auth budget): STARTTLS, SASL
    /// and in-band registration only need small stanzas. The parser made at the stream
    /// restart after SASL success then uses [`Limits::default`].
    pub fn pre_auth() -> Limits {
        Limits {
            max_stanza_bytes: 16_384,
            max_depth: 8,
            max_attributes: 16,
            max_elements: 128,
            max_buffered_bytes: 65_536,
        }
    }
}

/// The attributes of the peer's `<stream:stream>` header.
///
/// Checking them (`to` is our domain, `from` matches) is the caller's job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// `to`: the domain the peer wants to talk to.
    pub to: Option<String>,
    /// `from`: the peer's claimed identity.
    pub from: Option<String>,
    /// `version`: present and with major version 1 (checked by the parser).
    pub version: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
    /// `id` (initiating entities should not send one).
    pub id: Option<String>,
}

/// One thing that happened on the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The peer's stream header arrived.
    StreamOpen(StreamHeader),
    /// A complete top-level element (stanza or nonza) with its size on the wire.
    Stanza {
        /// The element, namespaces resolved.
        element: Element,
        /// Wire bytes of the element (including whitespace inside it).
        bytes: usize,
    },
    /// The peer sent `</stream:stream>`; later input is ignored.
    StreamClose,
}

#[derive(Debug)]
enum State {
    Header,
    Open,
    Closed,
    Failed(StreamError),
}

/// Incremental parser for one XML stream (one per stream restart).
pub struct StreamParser {
    /// `None` after [`StreamParser::release_idle`]: made again, primed with `header`, when
    /// input arrives. Boxed: rxml's parser is some 550 bytes, which an idle stream would
    /// otherwise keep room for.
    xml: Option<Box<rxml::Parser>>,
    /// The peer's stream header as it was sent (namespace declarations included), to prime a
    /// new rxml parser with.
    header: Vec<u8>,
    limits: Limits,
    content_ns: &'static str,
    state: State,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes rxml consumed that are not yet part of a reported event.
    pending: usize,
    /// Wire bytes of the stanza under construction.
    stanza_bytes: usize,
    /// Open elements of the stanza under construction; `stack[0]` is the stanza.
    stack: Vec<Element>,
    /// Elements started so far in the stanza under construction.
    elements: usize,
}

impl std::fmt::Debug for StreamParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamParser")
            .field("state", &self.state)
            .field("limits", &self.limits)
            .field("depth", &self.stack.len())
            .finish_non_exhaustive()
    }
}

/// An rxml parser with our token limit.
fn new_xml(limits: Limits) -> Box<rxml::Parser> {
    let options = rxml::parser::Options {
        max_token_length: limits.max_stanza_bytes.clamp(1, MAX_TOKEN_BYTES),
        ..Default::default()
    };
    Box::new(rxml::Parser::with_options(options))
}

/// Longest name or attribute value accepted, in bytes. rxml reserves this much (twice) for every
/// parser, that is for every connection, so it stays small; text is not limited by it (rxml hands
/// long text over in pieces), only by the stanza size.
const MAX_TOKEN_BYTES: usize = 8192;

impl StreamParser {
    /// A parser for a client stream (content namespace `jabber:client`).
    pub fn new(limits: Limits) -> StreamParser {
        StreamParser::with_content_namespace(limits, NS_CLIENT)
    }

    /// A parser whose stanzas must be in `content_ns` (e.g. [`NS_SERVER`] for s2s).
    pub fn with_content_namespace(limits: Limits, content_ns: &'static str) -> StreamParser {
        StreamParser {
            xml: Some(new_xml(limits)),
            header: Vec::new(),
            limits,
            content_ns,
            state: State::Header,
            buf: Vec::new(),
            pos: 0,
            pending: 0,
            stanza_bytes: 0,
            stack: Vec::new(),
            elements: 0,
        }
    }

    /// Appends received bytes. Fails (for good) if more than
    /// [`Limits::max_buffered_bytes`] would be waiting; pull events after every feed.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), StreamError> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Closed => return Ok(()),
            State::Header | State::Open => {}
        }
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let waiting = self.buf.len() - self.pos;
        if waiting.saturating_add(data.len()) > self.limits.max_buffered_bytes {
            return Err(self.fail(StreamError::BufferFull {
                limit: self.limits.max_buffered_bytes,
            }));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Frees what an idle stream does not need: rxml's token buffers (twice
    /// [`MAX_TOKEN_BYTES`]), the input buffer and the element stack. Only between stanzas with
    /// nothing unparsed; otherwise it does nothing. The next input is parsed by a new rxml
    /// parser that first reads the stream header again, so namespaces declared there still
    /// apply. Call it when the connection has nothing more to read for now.
    pub fn release_idle(&mut self) {
        let between_stanzas = matches!(self.state, State::Open)
            && self.stack.is_empty()
            && self.pending == 0
            && self.pos >= self.buf.len();
        if between_stanzas && self.xml.is_some() {
            self.xml = None;
            self.buf = Vec::new();
            self.pos = 0;
            self.stack = Vec::new();
        }
    }

    /// A new rxml parser that has read the stream header again.
    fn primed(&self) -> Result<Box<rxml::Parser>, StreamError> {
        let mut xml = new_xml(self.limits);
        let mut rest = &self.header[..];
        loop {
            match xml.parse(&mut rest, false) {
                Ok(Some(rxml::Event::StartElement(..))) if rest.is_empty() => return Ok(xml),
                Ok(Some(rxml::Event::XmlDeclaration(..) | rxml::Event::Text(..))) => {}
                _ => {
                    return Err(StreamError::BadFormat(
                        "stream header could not be read again",
                    ))
                }
            }
        }
    }

    /// The next complete event, or `Ok(None)` when more input is needed (or the stream closed).
    pub fn next_event(&mut self) -> Result<Option<Event>, StreamError> {
        if self.xml.is_none() {
            if self.pos >= self.buf.len() || !matches!(self.state, State::Open) {
                return Ok(None);
            }
            match self.primed() {
                Ok(xml) => self.xml = Some(xml),
                Err(e) => return Err(self.fail(e)),
            }
        }
        loop {
            match &self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Closed => return Ok(None),
                State::Header => self.skip_leading_whitespace(),
                State::Open => {}
            }
            // rxml may hold a finished event (the end of `<x/>`) without needing input, so it
            // is asked even when our buffer is empty.
            let end = self.buf.len().min(self.pos + WINDOW);
            let mut window = &self.buf[self.pos..end];
            let before = window.len();
            let Some(xml) = self.xml.as_mut() else {
                return Ok(None);
            };
            let result = xml.parse(&mut window, false);
            let consumed = before - window.len();
            if let State::Header = self.state {
                self.header
                    .extend_from_slice(&self.buf[self.pos..self.pos + consumed]);
            }
            self.pos += consumed;
            self.pending = self.pending.saturating_add(consumed);
            let event = match result {
                Ok(Some(ev)) => ev,
                // rxml only reports the end of the document with at_eof = true, which we never pass.
                Ok(None) => {
                    self.state = State::Closed;
                    return Ok(Some(Event::StreamClose));
                }
                Err(rxml::error::EndOrError::NeedMoreData) => {
                    self.check_budget()?;
                    if self.pos >= self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                        return Ok(None);
                    }
                    continue;
                }
                Err(rxml::error::EndOrError::Error(e)) => {
                    let err = match StreamError::from(e) {
                        StreamError::StanzaTooLarge { .. } => StreamError::StanzaTooLarge {
                            limit: self.limits.max_stanza_bytes,
                        },
                        other => other,
                    };
                    return Err(self.fail(err));
                }
            };
            let len = event.metrics().len();
            self.pending = self.pending.saturating_sub(len);
            if !self.stack.is_empty() {
                self.stanza_bytes = self.stanza_bytes.saturating_add(len);
            }
            self.check_budget()?;
            if let Some(ev) = self.handle(event, len)? {
                return Ok(Some(ev));
            }
        }
    }

    /// The bytes fed but not yet parsed, for the parser that continues after a stream restart.
    ///
    /// Call it right after the event that triggered the restart; bytes of an unfinished
    /// element already consumed by rxml are not included.
    pub fn into_unparsed(mut self) -> Vec<u8> {
        self.buf.drain(..self.pos);
        self.buf
    }

    /// Whitespace before the stream header is allowed by XMPP but rejected by rxml.
    fn skip_leading_whitespace(&mut self) {
        if self.pending == 0 {
            while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.buf.get(self.pos) {
                self.pos += 1;
            }
        }
    }

    fn fail(&mut self, err: StreamError) -> StreamError {
        self.state = State::Failed(err.clone());
        self.stack.clear();
        self.buf = Vec::new();
        self.pos = 0;
        err
    }

    fn check_budget(&mut self) -> Result<(), StreamError> {
        if self.stanza_bytes.saturating_add(self.pending) > self.limits.max_stanza_bytes {
            return Err(self.fail(StreamError::StanzaTooLarge {
                limit: self.limits.max_stanza_bytes,
            }));
        }
        Ok(())
    }

    fn handle(&mut self, event: rxml::Event, len: usize) -> Result<Option<Event>, StreamError> {
        match event {
            rxml::Event::XmlDeclaration(..) => Ok(None),
            rxml::Event::StartElement(_, (ns, name), attrs) => {
                if attrs.len() > self.limits.max_attributes {
                    return Err(self.fail(StreamError::TooManyAttributes {
                        limit: self.limits.max_attributes,
                    }));
                }
                if let State::Header = self.state {
                    let header = self.stream_open(ns.as_str(), name.as_str(), &attrs)?;
                    // Keep the header's own bytes, not what rxml read beyond it.
                    let own = self.header.len().saturating_sub(self.pending);
                    self.header.truncate(own);
                    self.state = State::Open;
                    return Ok(Some(Event::StreamOpen(header)));
                }
                if self.stack.len() >= self.limits.max_depth {
                    return Err(self.fail(StreamError::TooDeep {
                        limit: self.limits.max_depth,
                    }));
                }
                if self.stack.is_empty() {
                    let ns = ns.as_str();
                    let is_stanza = matches!(name.as_str(), "message" | "presence" | "iq");
                    if ns.is_empty() || (is_stanza && ns != self.content_ns) {
                        return Err(self.fail(StreamError::InvalidNamespace));
                    }
                    self.stanza_bytes = len;
                    self.elements = 0;
                }
                self.elements += 1;
                if self.elements > self.limits.max_elements {
                    return Err(self.fail(StreamError::TooManyElements {
                        limit: self.limits.max_elements,
                    }));
                }
                let mut element = Element::bare(name.as_str(), ns.as_str());
                *element.attrs_mut() = attrs;
                self.stack.push(element);
                Ok(None)
            }
            rxml::Event::Text(_, text) => {
                match self.stack.last_mut() {
                    Some(top) => top.append_text(text),
                    None if text
                        .bytes()
                        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) => {}
                    None => return Err(self.fail(StreamError::BadFormat("text between stanzas"))),
                }
                Ok(None)
            }
            rxml::Event::EndElement(_) => match self.stack.pop() {
                None => {
                    self.state = State::Closed;
                    self.buf = Vec::new();
                    self.pos = 0;
                    Ok(Some(Event::StreamClose))
                }
                Some(element) => match self.stack.last_mut() {
                    Some(parent) => {
                        parent.append_child(element);
                        Ok(None)
                    }
                    None => {
                        let bytes = std::mem::take(&mut self.stanza_bytes);
                        Ok(Some(Event::Stanza { element, bytes }))
                    }
                },
            },
        }
    }

    fn stream_open(
        &mut self,
        ns: &str,
        name: &str,
        attrs: &rxml::AttrMap,
    ) -> Result<StreamHeader, StreamError> {
        if ns != NS_STREAM {
            return Err(self.fail(StreamError::InvalidNamespace));
        }
        if name != "stream" {
            return Err(self.fail(StreamError::BadFormat("root element is not stream")));
        }
        let plain = |key: &str| {
            attrs
                .get(&rxml::Namespace::NONE, key)
                .map(|v: &String| v.to_owned())
        };
        let header = StreamHeader {
            to: plain("to"),
            from: plain("from"),
            version: plain("version"),
            lang: attrs
                .get(rxml::Namespace::xml(), "lang")
                .map(|v: &String| v.to_owned()),
            id: plain("id"),
        };
        // RFC 6120 §4.7.5: no version means pre-1.0 XMPP, which we do not speak.
        let major = header
            .version
            .as_deref()
            .and_then(|v| v.split_once('.'))
            .map(|(major, _)| major);
        if major.and_then(|m| m.parse::<u32>().ok()) != Some(1) {
            return Err(self.fail(StreamError::UnsupportedVersion));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests;
