//! The build hooks' input: guix-daemon's request and path lines, and
//! nix-daemon's binary settings block and `try` message. Parsing never
//! panics, and a parsed request names a `.drv` in the store directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::store_path::StoreDir;
use offload_master::hook::{nix, request};

fuzz_target!(|data: &[u8]| {
    let dir = StoreDir::default();
    let text = String::from_utf8_lossy(data);
    if let Ok(r) = request::parse_request(&text, &dir) {
        assert!(r.drv.name().ends_with(".drv"));
        assert!(r.features.len() <= 64);
    }
    let _ = request::parse_paths(&text, &dir);
    // The Nix side: settings, then a try message's fields.
    let mut r = data;
    if nix::read_settings(&mut r).is_ok() {
        let _ = nix::read_string(&mut r, 4096, "system");
        let _ = nix::read_set(&mut r, 256, "features");
    }
});
