//! Fuzz target: SCRAM server messages from the client never panic and never authenticate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snikket_xmpp::scram::{
    ChannelBinding, ChannelBindingType, Mechanism, ScramServer, StoredCredentials,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (first, last) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mechanism = Mechanism::ALL[usize::from(selector) % Mechanism::ALL.len()];
    let bindings = vec![ChannelBinding {
        kind: ChannelBindingType::TlsExporter,
        data: vec![1; 32],
    }];
    let mut server = ScramServer::new(mechanism, bindings, selector & 0x10 != 0);
    if server.client_first(first).is_err() {
        return;
    }
    let hash = mechanism.hash();
    let creds = StoredCredentials::derive(hash, "password123", b"salt", 1).ok();
    let known = if selector & 0x20 != 0 {
        creds.as_ref()
    } else {
        None
    };
    if server.server_first(known).is_err() {
        return;
    }
    // The server nonce is random, so fuzzed input can never carry a valid proof.
    assert!(server.client_final(last).is_err());
});
