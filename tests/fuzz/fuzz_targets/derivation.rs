//! The derivation parser must never panic, and whatever it accepts must
//! re-print to exactly the input bytes (it accepts only Nix's canonical form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::derivation::Derivation;

fuzz_target!(|data: &[u8]| {
    if let Ok(drv) = Derivation::parse(data) {
        assert_eq!(
            drv.to_aterm(),
            data,
            "accepted derivation re-prints differently"
        );
        let _ = drv.required_system_features();
    }
});
