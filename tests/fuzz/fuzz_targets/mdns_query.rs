//! mDNS queries from the network, as the agent's subtype responder reads
//! them: never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::mdns_wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(questions) = mdns_wire::questions(data) {
        assert!(questions.len() <= mdns_wire::MAX_QUESTIONS);
        assert!(questions.iter().all(|q| q.name.len() <= 256));
    }
});
