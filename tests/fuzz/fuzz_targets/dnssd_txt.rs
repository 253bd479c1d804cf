//! DNS-SD TXT records from the network: decoding never panics, and what
//! decodes re-encodes to a record that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::dnssd::Txt;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries: Vec<(&str, &str)> = text.split('\0').map(|e| e.split_once('=').unwrap_or((e, ""))).collect();
    if let Ok(txt) = Txt::decode(entries.iter().copied()) {
        let encoded = txt.encode();
        let again = Txt::decode(encoded.iter().map(|(k, v)| (*k, v.as_str()))).expect("our own encoding decodes");
        assert_eq!(again.systems, txt.systems);
        assert_eq!(again.key, txt.key);
    }
});
