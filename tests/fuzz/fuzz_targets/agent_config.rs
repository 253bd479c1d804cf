//! The agent's TOML configuration: parsing never panics, and an error
//! names its place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_agent::config::File;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = File::parse(text);
    }
});
