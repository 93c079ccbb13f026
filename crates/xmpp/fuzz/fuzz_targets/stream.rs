//! Fuzz target: the stream parser never panics, and chunking never changes its events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snikket_xmpp::framing::{Event, Limits, StreamParser};

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>";

/// Feeds `data` in chunks of `chunk` bytes and returns the events and the first error.
fn run(data: &[u8], chunk: usize) -> (Vec<Event>, Option<&'static str>) {
    let limits = Limits {
        max_stanza_bytes: 4096,
        max_depth: 16,
        max_attributes: 16,
        max_elements: 64,
        max_buffered_bytes: 1 << 20,
    };
    let mut parser = StreamParser::new(limits);
    let mut events = Vec::new();
    for piece in data.chunks(chunk) {
        if let Err(e) = parser.feed(piece) {
            return (events, Some(e.condition()));
        }
        loop {
            match parser.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e.condition())),
            }
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // Half the inputs get a valid header so the fuzzer reaches stanza parsing quickly.
    let mut input = Vec::with_capacity(HEADER.len() + rest.len());
    if first & 1 == 1 {
        input.extend_from_slice(HEADER);
    }
    input.extend_from_slice(rest);
    let chunk = usize::from(first >> 1).max(1);
    if input.len() > 1 << 20 {
        return;
    }
    let whole = run(&input, input.len().max(1));
    let split = run(&input, chunk);
    // Which limit trips first may depend on chunking; the events and failing at all may not.
    assert_eq!(whole.0, split.0, "chunking changed the events");
    assert_eq!(
        whole.1.is_some(),
        split.1.is_some(),
        "chunking changed the verdict"
    );
});
