//! Tests of the stream parser: events, exact errors, limits, restarts, and chunking properties.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' xml:lang='en'>";

fn small() -> Limits {
    Limits {
        max_stanza_bytes: 200,
        max_depth: 4,
        max_attributes: 3,
        max_elements: 5,
        max_buffered_bytes: 1000,
    }
}

/// Feeds everything at once and collects events until the first error.
fn run(limits: Limits, input: &[u8]) -> (Vec<Event>, Option<StreamError>) {
    let mut p = StreamParser::new(limits);
    let mut events = Vec::new();
    if let Err(e) = p.feed(input) {
        return (events, Some(e));
    }
    loop {
        match p.next_event() {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => return (events, None),
            Err(e) => return (events, Some(e)),
        }
    }
}

fn err_of(input: &str) -> StreamError {
    run(small(), input.as_bytes()).1.expect("an error")
}

fn with_header(body: &str) -> String {
    format!("{HEADER}{body}")
}

#[test]
fn full_stream() {
    let stanza = "<message to='a@example.org' type='chat'><body>h&amp;i</body></message>";
    let input = format!(
        "<?xml version='1.0'?>\n{HEADER} {stanza}\n<r xmlns='urn:xmpp:sm:3'/></stream:stream>"
    );
    let (events, err) = run(Limits::default(), input.as_bytes());
    assert_eq!(err, None);
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0],
        Event::StreamOpen(StreamHeader {
            to: Some("example.org".into()),
            from: None,
            version: Some("1.0".into()),
            lang: Some("en".into()),
            id: None,
        })
    );
    let Event::Stanza { element, bytes } = &events[1] else {
        panic!("{:?}", events[1])
    };
    assert_eq!(*bytes, stanza.len());
    assert!(element.is("message", "jabber:client"));
    assert_eq!(element.attr("type"), Some("chat"));
    assert_eq!(
        element.get_child("body", "jabber:client").unwrap().text(),
        "h&i"
    );
    let Event::Stanza { element, bytes } = &events[2] else {
        panic!("{:?}", events[2])
    };
    assert!(element.is("r", "urn:xmpp:sm:3"));
    assert_eq!(*bytes, 26);
    assert_eq!(events[3], Event::StreamClose);
}

#[test]
fn leading_whitespace_before_header_is_allowed() {
    let (events, err) = run(small(), format!("\r\n  {HEADER}").as_bytes());
    assert_eq!(err, None);
    assert!(matches!(events[..], [Event::StreamOpen(_)]));
}

#[test]
fn needs_more_data_then_continues() {
    let mut p = StreamParser::new(small());
    p.feed(HEADER.as_bytes()).unwrap();
    p.feed(b"<presence><show>aw").unwrap();
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert_eq!(p.next_event(), Ok(None));
    p.feed(b"ay</show></presence>").unwrap();
    let Ok(Some(Event::Stanza { element, .. })) = p.next_event() else {
        panic!()
    };
    assert_eq!(
        element.get_child("show", "jabber:client").unwrap().text(),
        "away"
    );
}

#[test]
fn header_errors() {
    assert_eq!(
        err_of("<stream:stream xmlns:stream='urn:wrong' version='1.0'>"),
        StreamError::InvalidNamespace
    );
    assert_eq!(
        err_of("<stream:streem xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"),
        StreamError::BadFormat("root element is not stream")
    );
    let no_version = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.org'>";
    assert_eq!(err_of(no_version), StreamError::UnsupportedVersion);
    assert_eq!(
        err_of(&HEADER.replace("'1.0'", "'2.0'")),
        StreamError::UnsupportedVersion
    );
    assert_eq!(err_of("<a/>"), StreamError::InvalidNamespace);
    assert_eq!(err_of("hello<a/>").condition(), "not-well-formed");
}

#[test]
fn content_namespace_is_enforced() {
    let bare = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    assert_eq!(
        err_of(&format!("{bare}<message/>")),
        StreamError::InvalidNamespace
    );
    assert_eq!(
        err_of(&with_header("<message xmlns='jabber:server'/>")),
        StreamError::InvalidNamespace
    );
    // Nonzas in their own namespace are fine.
    let (events, err) = run(
        small(),
        with_header(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>=</auth>",
        )
        .as_bytes(),
    );
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
}

#[test]
fn restricted_xml() {
    let cases = [
        "<!DOCTYPE stream>",
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]>",
        "<!-- hi -->",
    ];
    for case in cases {
        assert_eq!(err_of(case).condition(), "restricted-xml", "{case}");
    }
    let inside = [
        "<!ENTITY x 'y'>",
        "<message><body>&lol;</body></message>",
        "<?php echo 1; ?>",
        "<message><!-- c --></message>",
        "<message><!DOCTYPE x></message>",
    ];
    for case in inside {
        assert_eq!(
            err_of(&with_header(case)).condition(),
            "restricted-xml",
            "{case}"
        );
    }
    assert_eq!(
        err_of(&with_header("<a xmlns='x'>&lol;</a>")),
        StreamError::RestrictedXml("entity reference")
    );
}

#[test]
fn encoding_errors() {
    assert_eq!(
        err_of("<?xml version='1.0' encoding='ISO-8859-1'?>"),
        StreamError::UnsupportedEncoding
    );
    let mut bytes = with_header("<message><body>").into_bytes();
    bytes.extend_from_slice(b"\xc3\x28</body></message>");
    assert_eq!(
        run(small(), &bytes).1,
        Some(StreamError::UnsupportedEncoding)
    );
}

#[test]
fn not_well_formed() {
    for case in [
        "<message></presence>",
        "<message a='1' a='2'/>",
        "<x:message/>",
        "<message><body>\u{1}</body></message>",
        "<message>&#0;</message>",
        "<message/>oops<message/>",
    ] {
        let err = err_of(&with_header(case));
        assert!(
            matches!(
                err,
                StreamError::NotWellFormed(_) | StreamError::BadFormat(_)
            ),
            "{case}: {err:?}"
        );
    }
    assert_eq!(
        err_of(&with_header("<message/>oops<message/>")),
        StreamError::BadFormat("text between stanzas")
    );
    assert_eq!(
        err_of(&with_header("<message></presence>")),
        StreamError::NotWellFormed(rxml::Error::ElementMismatch)
    );
}

#[test]
fn stanza_size_limit() {
    // Exactly at the limit passes.
    let filler = 200 - "<message><body></body></message>".len();
    let ok = format!("<message><body>{}</body></message>", "x".repeat(filler));
    assert_eq!(ok.len(), 200);
    let (events, err) = run(small(), with_header(&ok).as_bytes());
    assert_eq!(err, None);
    assert!(matches!(events[1], Event::Stanza { bytes: 200, .. }));
    // One byte more fails.
    let big = format!("<message><body>{}</body></message>", "x".repeat(filler + 1));
    assert_eq!(
        err_of(&with_header(&big)),
        StreamError::StanzaTooLarge { limit: 200 }
    );
    assert_eq!(err_of(&with_header(&big)).condition(), "policy-violation");
}

#[test]
fn long_text_is_whole_but_names_and_attribute_values_are_bounded() {
    // Text far longer than the token limit (an avatar's base64) arrives in one piece.
    let text = "A".repeat(100_000);
    let stanza = format!("<iq type='set' id='a'><data xmlns='urn:x'>{text}</data></iq>");
    let (events, err) = run(Limits::default(), with_header(&stanza).as_bytes());
    assert_eq!(err, None);
    let Event::Stanza { element, .. } = &events[1] else {
        panic!("{events:?}")
    };
    let data = element.children().next().expect("payload");
    assert_eq!(data.text().len(), 100_000);
    // An attribute value over the token limit is refused, not buffered.
    let long = format!("<iq type='set' id='{}'/>", "b".repeat(MAX_TOKEN_BYTES + 1));
    let (_, err) = run(Limits::default(), with_header(&long).as_bytes());
    assert!(
        err.is_some(),
        "accepted a {} byte attribute",
        MAX_TOKEN_BYTES + 1
    );
}

#[test]
fn unfinished_start_tag_is_bounded() {
    // A tag that never closes is refused once it passes the limit, not buffered forever.
    let mut p = StreamParser::new(small());
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    p.feed(b"<message ").unwrap();
    assert_eq!(p.next_event(), Ok(None));
    let mut result = Ok(None);
    for i in 0..100 {
        p.feed(format!("a{i}='{}' ", "v".repeat(20)).as_bytes())
            .unwrap();
        result = p.next_event();
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(StreamError::StanzaTooLarge { limit: 200 }));
}

#[test]
fn oversized_header_is_bounded() {
    let header = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}'",
        "x".repeat(300)
    );
    assert_eq!(err_of(&header), StreamError::StanzaTooLarge { limit: 200 });
}

#[test]
fn depth_and_attribute_limits() {
    let (_, err) = run(
        small(),
        with_header("<a xmlns='x'><b><c><d/></c></b></a>").as_bytes(),
    );
    assert_eq!(err, None);
    assert_eq!(
        err_of(&with_header("<a xmlns='x'><b><c><d><e/></d></c></b></a>")),
        StreamError::TooDeep { limit: 4 }
    );
    let (_, err) = run(
        small(),
        with_header("<a xmlns='x' b='1' c='2' d='3'/>").as_bytes(),
    );
    assert_eq!(err, None);
    assert_eq!(
        err_of(&with_header("<a xmlns='x' b='1' c='2' d='3' e='4'/>")),
        StreamError::TooManyAttributes { limit: 3 }
    );
}

#[test]
fn element_count_limit() {
    let (_, err) = run(
        small(),
        with_header("<a xmlns='x'><b/><b/><b/><b/></a>").as_bytes(),
    );
    assert_eq!(err, None);
    assert_eq!(
        err_of(&with_header("<a xmlns='x'><b/><b/><b/><b/><b/></a>")),
        StreamError::TooManyElements { limit: 5 }
    );
    // The count is per stanza.
    let (events, err) = run(
        small(),
        with_header("<a xmlns='x'><b/><b/><b/><b/></a><a xmlns='x'><b/><b/><b/><b/></a>")
            .as_bytes(),
    );
    assert_eq!(err, None);
    assert_eq!(events.len(), 3);
}

#[test]
fn pre_auth_limits_are_tighter() {
    let pre = Limits::pre_auth();
    let full = Limits::default();
    assert!(pre.max_stanza_bytes < full.max_stanza_bytes);
    assert!(pre.max_elements < full.max_elements);
    assert!(pre.max_buffered_bytes < full.max_buffered_bytes);
    let big = format!("<a xmlns='x'>{}</a>", "x".repeat(20_000));
    assert_eq!(
        run(pre, with_header(&big).as_bytes()).1,
        Some(StreamError::StanzaTooLarge { limit: 16_384 })
    );
    assert_eq!(run(full, with_header(&big).as_bytes()).1, None);
}

#[test]
fn buffer_limit_and_sticky_errors() {
    let mut p = StreamParser::new(small());
    p.feed(&[b' '; 600]).unwrap();
    let err = p.feed(&[b' '; 600]).unwrap_err();
    assert_eq!(err, StreamError::BufferFull { limit: 1000 });
    assert_eq!(p.next_event(), Err(err.clone()));
    assert_eq!(p.feed(HEADER.as_bytes()), Err(err));
}

#[test]
fn billion_laughs_is_refused_early() {
    let bomb = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
        <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]><lolz>&lol2;</lolz>";
    let (events, err) = run(Limits::default(), bomb.as_bytes());
    assert!(events.is_empty());
    assert_eq!(err.unwrap().condition(), "restricted-xml");
}

#[test]
fn restart_hands_over_unparsed_bytes() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    p.feed(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>=</auth>")
        .unwrap();
    p.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza { .. }))));
    let rest = p.into_unparsed();
    assert_eq!(rest, HEADER.as_bytes());
    let mut p2 = StreamParser::new(Limits::default());
    p2.feed(&rest).unwrap();
    assert!(matches!(p2.next_event(), Ok(Some(Event::StreamOpen(_)))));
}

#[test]
fn closed_stream_ignores_the_rest() {
    let mut p = StreamParser::new(small());
    p.feed(with_header("</stream:stream>").as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert_eq!(p.next_event(), Ok(Some(Event::StreamClose)));
    p.feed(b"<garbage").unwrap();
    assert_eq!(p.next_event(), Ok(None));
}

#[test]
fn error_conditions_are_rfc6120_names() {
    let all = [
        StreamError::NotWellFormed(rxml::Error::ElementMismatch),
        StreamError::RestrictedXml("comments"),
        StreamError::UnsupportedEncoding,
        StreamError::StanzaTooLarge { limit: 1 },
        StreamError::TooDeep { limit: 1 },
        StreamError::TooManyAttributes { limit: 1 },
        StreamError::TooManyElements { limit: 1 },
        StreamError::BufferFull { limit: 1 },
        StreamError::InvalidNamespace,
        StreamError::BadFormat("x"),
        StreamError::UnsupportedVersion,
    ];
    let names: Vec<_> = all.iter().map(StreamError::condition).collect();
    assert_eq!(
        names,
        [
            "not-well-formed",
            "restricted-xml",
            "unsupported-encoding",
            "policy-violation",
            "policy-violation",
            "policy-violation",
            "policy-violation",
            "policy-violation",
            "invalid-namespace",
            "bad-format",
            "unsupported-version"
        ]
    );
}

/// Feeds `input` in random chunks, pulling events after each, until the first error.
fn run_chunked(
    rng: &mut StdRng,
    limits: Limits,
    input: &[u8],
) -> (Vec<Event>, Option<StreamError>) {
    let mut p = StreamParser::new(limits);
    let mut events = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len().min(64));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = p.feed(chunk) {
            return (events, Some(e));
        }
        loop {
            match p.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn sample_stream() -> String {
    format!(
        "<?xml version='1.0'?>{HEADER}\n\
         <iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq> \
         <message to='b@example.org' xml:lang='de'><body>Grüße &lt;3 &#x1F600; <![CDATA[<raw>]]></body>\
         <x xmlns='urn:x' a='&quot;q&quot;'/></message>\r\n\
         <presence><status>{}</status></presence>\
         <r xmlns='urn:xmpp:sm:3'/></stream:stream>",
        "long ".repeat(300)
    )
}

#[test]
fn chunking_does_not_change_events() {
    let input = sample_stream();
    let (expected, err) = run(Limits::default(), input.as_bytes());
    assert_eq!(err, None);
    assert_eq!(expected.len(), 6);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..200 {
        let (events, err) = run_chunked(&mut rng, Limits::default(), input.as_bytes());
        assert_eq!(err, None);
        assert_eq!(events, expected);
    }
}

#[test]
fn chunking_does_not_change_errors() {
    let input = with_header("<message><body>ok</body></message><message><!-- x --></message>");
    let (expected, err) = run(Limits::default(), input.as_bytes());
    assert_eq!(
        err.as_ref().map(StreamError::condition),
        Some("restricted-xml")
    );
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..100 {
        let (events, e) = run_chunked(&mut rng, Limits::default(), input.as_bytes());
        assert_eq!(events, expected);
        assert_eq!(
            e.as_ref().map(StreamError::condition),
            Some("restricted-xml")
        );
    }
}

#[test]
fn random_bytes_and_mutations_never_panic_and_stay_bounded() {
    let mut rng = StdRng::seed_from_u64(42);
    let valid = sample_stream().into_bytes();
    let limits = small();
    for round in 0..2000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.gen_range(0..512);
            let mut v = HEADER.as_bytes().to_vec();
            v.extend((0..len).map(|_| rng.gen::<u8>()));
            v
        } else {
            let mut v = valid.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            v
        };
        let (events, _err) = run_chunked(&mut rng, limits, &input);
        for ev in events {
            if let Event::Stanza { bytes, .. } = ev {
                assert!(bytes <= limits.max_stanza_bytes);
            }
        }
    }
}

#[test]
fn byte_accounting_does_not_drift_on_long_streams() {
    // If any consumed byte were never attributed to an event, a long-lived stream would
    // eventually trip the stanza limit; run far more bytes than the limit through one parser.
    let shapes = [
        "<message><body>a &amp; b &#x41; <![CDATA[c]]> ü</body></message>",
        "<presence/>",
        "  \r\n\t ",
        "<iq type='set' id='x'><a xmlns='urn:a' xml:lang='en' b=\"'\"/></iq>",
        "<r xmlns='urn:xmpp:sm:3'/>",
    ];
    let mut p = StreamParser::new(Limits {
        max_stanza_bytes: 100,
        ..Limits::default()
    });
    p.feed(format!("<?xml version='1.0'?>\n{HEADER}").as_bytes())
        .unwrap();
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    let mut total = 0;
    let mut stanzas = 0;
    for i in 0..5000 {
        let s = shapes[i % shapes.len()];
        total += s.len();
        p.feed(s.as_bytes()).unwrap();
        while let Some(ev) = p.next_event().unwrap() {
            assert!(matches!(ev, Event::Stanza { .. }));
            stanzas += 1;
        }
        if !s.trim().is_empty() {
            assert_eq!(p.pending, 0, "after {s}");
        }
    }
    assert!(total > 100 * 1000);
    assert_eq!(stanzas, 4000);
}

#[test]
fn self_closing_stanza_at_end_of_chunk_is_delivered_at_once() {
    let mut p = StreamParser::new(small());
    p.feed(with_header("<presence/>").as_bytes()).unwrap();
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    let Ok(Some(Event::Stanza { element, bytes })) = p.next_event() else {
        panic!("stanza held back")
    };
    assert!(element.is("presence", "jabber:client"));
    assert_eq!(bytes, "<presence/>".len());
    assert_eq!(p.next_event(), Ok(None));
}

#[test]
fn releasing_idle_buffers_does_not_change_events() {
    let input = sample_stream();
    let (expected, err) = run(Limits::default(), input.as_bytes());
    assert_eq!(err, None);
    let mut rng = StdRng::seed_from_u64(0x1d1e);
    for _ in 0..200 {
        let mut p = StreamParser::new(Limits::default());
        let mut events = Vec::new();
        let mut rest = input.as_bytes();
        while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(64));
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            p.feed(chunk).expect("feed");
            while let Some(ev) = p.next_event().expect("event") {
                events.push(ev);
            }
            // As a connection does whenever the peer has sent nothing more for now.
            p.release_idle();
        }
        assert_eq!(events, expected);
    }
}

#[test]
fn prefixes_declared_on_the_stream_header_survive_a_release() {
    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        from='a.test' to='b.test' version='1.0'>";
    let mut p = StreamParser::with_content_namespace(Limits::default(), NS_SERVER);
    p.feed(header.as_bytes()).expect("feed");
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert_eq!(p.next_event(), Ok(None));
    p.release_idle();
    assert!(
        p.xml.is_none(),
        "nothing was pending, so the rxml parser is released"
    );
    p.feed(b"<db:result from='a.test' to='b.test'>key</db:result>")
        .expect("feed");
    match p.next_event() {
        Ok(Some(Event::Stanza { element, .. })) => {
            assert!(element.is("result", "jabber:server:dialback"));
            assert_eq!(element.text(), "key");
        }
        other => panic!("{other:?}"),
    }
    // Not released in the middle of a stanza.
    p.feed(b"<message from='x@a.test' to='y@b.test'><bo")
        .expect("feed");
    assert_eq!(p.next_event(), Ok(None));
    p.release_idle();
    assert!(p.xml.is_some());
    p.feed(b"dy>hi</body></message>").expect("feed");
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza { .. }))));
}

#[test]
fn an_idle_parser_keeps_no_room_for_rxml() {
    // Every session keeps a parser for as long as it lives; rxml's own parser (some 550 bytes)
    // lives behind a pointer, so a released one costs a word, not its full size.
    assert!(
        std::mem::size_of::<StreamParser>() < std::mem::size_of::<rxml::Parser>(),
        "StreamParser is {} bytes, rxml::Parser {}",
        std::mem::size_of::<StreamParser>(),
        std::mem::size_of::<rxml::Parser>()
    );
}
