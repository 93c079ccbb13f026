//! Codec tests: RFC 5769 test vectors, round trips and every malformed-input class.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// RFC 5769 §2.1.
const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

// RFC 5769 §2.2.
const SAMPLE_V4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

// RFC 5769 §2.3.
const SAMPLE_V6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

// RFC 5769 §2.4.
const SAMPLE_LONG_TERM: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn rfc5769_request() {
    let raw = hex(SAMPLE_REQUEST);
    let m = Message::decode(&raw).unwrap();
    assert_eq!(m.method, method::BINDING);
    assert_eq!(m.class, Class::Request);
    assert_eq!(m.text(attr::SOFTWARE).unwrap(), Some("STUN test client"));
    assert_eq!(m.text(attr::USERNAME).unwrap(), Some("evtj:h6vY"));
    assert_eq!(m.u32(attr::PRIORITY).unwrap(), Some(0x6e00_01ff));
    assert_eq!(m.check_integrity(SHORT_TERM_PASSWORD), Integrity::Sha1);
    assert_eq!(m.check_integrity(b"wrong"), Integrity::Invalid);
}

#[test]
fn rfc5769_ipv4_response() {
    let raw = hex(SAMPLE_V4_RESPONSE);
    let m = Message::decode(&raw).unwrap();
    assert_eq!(m.class, Class::Success);
    assert_eq!(
        m.xor_addr(attr::XOR_MAPPED_ADDRESS).unwrap(),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    assert_eq!(m.check_integrity(SHORT_TERM_PASSWORD), Integrity::Sha1);
}

#[test]
fn rfc5769_ipv6_response() {
    let raw = hex(SAMPLE_V6_RESPONSE);
    let m = Message::decode(&raw).unwrap();
    assert_eq!(
        m.xor_addr(attr::XOR_MAPPED_ADDRESS).unwrap(),
        Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        )
    );
    assert_eq!(m.check_integrity(SHORT_TERM_PASSWORD), Integrity::Sha1);
}

#[test]
fn rfc5769_long_term() {
    let raw = hex(SAMPLE_LONG_TERM);
    let m = Message::decode(&raw).unwrap();
    let user = m.text(attr::USERNAME).unwrap().unwrap();
    assert_eq!(user, "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}");
    assert_eq!(
        m.text(attr::NONCE).unwrap(),
        Some("f//499k954d6OL34oL9FSTvy64sA")
    );
    let realm = m.text(attr::REALM).unwrap().unwrap();
    assert_eq!(realm, "example.org");
    let key = long_term_key(user, realm, "TheMatrIX");
    assert_eq!(m.check_integrity(&key), Integrity::Sha1);
}

#[test]
fn builder_reproduces_rfc5769_ipv4_response() {
    let tid: [u8; 12] = hex("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
        .try_into()
        .unwrap();
    let mut b = Builder::new(method::BINDING, Class::Success, tid);
    // The RFC pads SOFTWARE with a space; our builder pads with zeros, so compare the MAC by
    // decoding instead of bytes.
    b.add(attr::SOFTWARE, b"test vector")
        .add_xor_addr(attr::XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap())
        .add_integrity(SHORT_TERM_PASSWORD)
        .add_fingerprint();
    let out = b.finish();
    let want = hex(SAMPLE_V4_RESPONSE);
    assert_eq!(out.len(), want.len());
    assert_eq!(&out[..35], &want[..35]);
    assert_eq!(&out[36..44], &want[36..44], "xor-mapped-address bytes");
    let m = Message::decode(&out).unwrap();
    assert_eq!(m.check_integrity(SHORT_TERM_PASSWORD), Integrity::Sha1);
}

#[test]
fn round_trip_turn_attributes() {
    let tid = [7u8; 12];
    let key = long_term_key("1700000000:alice", "example.com", "pw");
    let peer6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
    let mut b = Builder::new(method::CREATE_PERMISSION, Class::Request, tid);
    b.add_xor_addr(attr::XOR_PEER_ADDRESS, "198.51.100.7:9".parse().unwrap())
        .add_xor_addr(attr::XOR_PEER_ADDRESS, peer6)
        .add_u32(attr::LIFETIME, 600)
        .add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .add_u32(attr::CHANNEL_NUMBER, 0x4001_0000)
        .add(attr::USERNAME, b"1700000000:alice")
        .add_integrity_sha256(&key)
        .add_fingerprint();
    let raw = b.finish();
    let m = Message::decode(&raw).unwrap();
    assert_eq!(m.method, method::CREATE_PERMISSION);
    assert_eq!(m.class, Class::Request);
    assert_eq!(m.tid, tid);
    assert_eq!(
        m.xor_addrs(attr::XOR_PEER_ADDRESS).unwrap(),
        vec!["198.51.100.7:9".parse().unwrap(), peer6]
    );
    assert_eq!(m.u32(attr::LIFETIME).unwrap(), Some(600));
    assert_eq!(m.requested_transport().unwrap(), Some(17));
    assert_eq!(m.channel_number().unwrap(), Some(0x4001));
    assert_eq!(m.check_integrity(&key), Integrity::Sha256);
    assert_eq!(m.check_integrity(b"other"), Integrity::Invalid);

    let mut e = Builder::new(method::ALLOCATE, Class::Error, tid);
    e.add_error(438, "Stale Nonce");
    let raw = e.finish();
    let m = Message::decode(&raw).unwrap();
    assert_eq!(m.class, Class::Error);
    assert_eq!(m.method, method::ALLOCATE);
    assert_eq!(m.error_code().unwrap(), Some((438, "Stale Nonce")));
    assert_eq!(m.check_integrity(b"k"), Integrity::Missing);
}

#[test]
fn every_method_and_class_round_trips() {
    for method in [0x001, 0x003, 0x004, 0x006, 0x007, 0x008, 0x009, 0xABC] {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let raw = Builder::new(method, class, [1; 12]).finish();
            let h = header(&raw).unwrap();
            assert_eq!((h.method, h.class), (method, class));
        }
    }
}

#[test]
fn malformed_input_is_rejected() {
    let good = hex(SAMPLE_REQUEST);
    assert_eq!(
        Message::decode(&good[..19]).unwrap_err(),
        DecodeError::TooShort
    );
    assert_eq!(Message::decode(&[]).unwrap_err(), DecodeError::TooShort);
    let mut bad = good.clone();
    bad[4] = 0;
    assert_eq!(Message::decode(&bad).unwrap_err(), DecodeError::BadCookie);
    let mut bad = good.clone();
    bad[0] = 0x80;
    assert_eq!(Message::decode(&bad).unwrap_err(), DecodeError::NotStun);
    // Header length beyond the data.
    let mut bad = good.clone();
    bad[3] = 0x5c;
    assert_eq!(Message::decode(&bad).unwrap_err(), DecodeError::BadLength);
    // Length not a multiple of 4.
    let mut bad = good.clone();
    bad[3] = 0x57;
    assert_eq!(Message::decode(&bad).unwrap_err(), DecodeError::BadLength);
    // An attribute claiming more bytes than remain.
    let mut b = Builder::new(method::BINDING, Class::Request, [3; 12]);
    b.add(attr::SOFTWARE, b"abcd");
    let mut bad = b.finish();
    bad[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
    assert_eq!(
        Message::decode(&bad).unwrap_err(),
        DecodeError::AttributeOverflow
    );
    // A corrupted byte under FINGERPRINT.
    let mut bad = good.clone();
    bad[30] ^= 1;
    assert_eq!(
        Message::decode(&bad).unwrap_err(),
        DecodeError::BadFingerprint
    );
    // Oversized.
    let mut big = Builder::new(method::SEND, Class::Indication, [0; 12]);
    big.add(attr::DATA, &vec![0u8; MAX_MESSAGE_LEN]);
    assert_eq!(
        Message::decode(&big.finish()).unwrap_err(),
        DecodeError::TooLarge
    );
}

#[test]
fn malformed_attribute_values() {
    let mut b = Builder::new(method::ALLOCATE, Class::Request, [3; 12]);
    b.add(attr::XOR_PEER_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4])
        .add(attr::LIFETIME, &[1, 2])
        .add(attr::REQUESTED_TRANSPORT, &[17])
        .add(attr::USERNAME, &[0xff, 0xfe])
        .add(attr::XOR_RELAYED_ADDRESS, &[0, 1, 0]);
    let raw = b.finish();
    let m = Message::decode(&raw).unwrap();
    assert!(m.xor_addr(attr::XOR_PEER_ADDRESS).is_err());
    assert!(m.xor_addr(attr::XOR_RELAYED_ADDRESS).is_err());
    assert!(m.u32(attr::LIFETIME).is_err());
    assert!(m.requested_transport().is_err());
    assert!(m.text(attr::USERNAME).is_err());
    assert_eq!(
        m.unknown_required(&[attr::LIFETIME]),
        vec![
            attr::XOR_PEER_ADDRESS,
            attr::REQUESTED_TRANSPORT,
            attr::USERNAME,
            attr::XOR_RELAYED_ADDRESS
        ]
    );
}

#[test]
fn channel_data_framing() {
    let mut out = Vec::new();
    encode_channel_data(0x4001, b"hello", true, &mut out);
    assert_eq!(out.len(), 12);
    assert_eq!(frame_len(&out), Some(Ok(12)));
    assert_eq!(decode_channel_data(&out).unwrap(), (0x4001, &b"hello"[..]));
    encode_channel_data(0x4001, b"hello", false, &mut out);
    assert_eq!(out.len(), 9);
    assert_eq!(
        decode_channel_data(&[0x40, 0x01, 0, 9, 1]).unwrap_err(),
        ChannelDataError::BadLength
    );
    assert_eq!(
        decode_channel_data(&[0x80, 0x01, 0, 0]).unwrap_err(),
        ChannelDataError::BadChannel
    );
    assert_eq!(
        decode_channel_data(&[0x40]).unwrap_err(),
        ChannelDataError::TooShort
    );
    assert_eq!(frame_len(&[0x40]), None);
    assert_eq!(frame_len(&[0xC0, 0, 0, 0]), Some(Err(())));
    assert_eq!(frame_len(&[0, 1, 0, 8]), Some(Ok(28)));
}

#[test]
fn decoding_random_bytes_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5769);
    let seed = hex(SAMPLE_LONG_TERM);
    for _ in 0..20_000 {
        let mut v = seed.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..v.len());
            v[i] = rng.gen();
        }
        v.truncate(rng.gen_range(0..=v.len()));
        if let Ok(m) = Message::decode(&v) {
            let _ = m.check_integrity(b"k");
            let _ = m.xor_addrs(attr::XOR_PEER_ADDRESS);
            let _ = m.text(attr::USERNAME);
            let _ = m.error_code();
        }
        let _ = decode_channel_data(&v);
        let _ = frame_len(&v);
    }
}
