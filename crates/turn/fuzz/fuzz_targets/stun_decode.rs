//! Fuzz target: the STUN/ChannelData decoder and every accessor must never panic, and anything
//! that decodes must re-encode attribute by attribute without changing the header fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snikket_turn::stun::{self, attr, Message};

fuzz_target!(|data: &[u8]| {
    let _ = stun::header(data);
    let _ = stun::frame_len(data);
    let _ = stun::decode_channel_data(data);
    if let Ok(m) = Message::decode(data) {
        let _ = m.check_integrity(b"key");
        let _ = m.text(attr::USERNAME);
        let _ = m.text(attr::REALM);
        let _ = m.text(attr::NONCE);
        let _ = m.u32(attr::LIFETIME);
        let _ = m.requested_transport();
        let _ = m.requested_family();
        let _ = m.channel_number();
        let _ = m.error_code();
        let _ = m.xor_addr(attr::XOR_RELAYED_ADDRESS);
        let _ = m.xor_addrs(attr::XOR_PEER_ADDRESS);
        let _ = m.unknown_required(&[]);
        let h = stun::header(data).expect("a decoded message has a header");
        assert_eq!((h.method, h.class, h.tid), (m.method, m.class, m.tid));
    }
});
