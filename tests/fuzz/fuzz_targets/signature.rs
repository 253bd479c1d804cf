//! Signature texts: parsing and checking must never panic, and nothing but
//! the real key's signature over the right hash may come out valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::acl::Acl;
use offload_core::keys::PublicKey;
use offload_core::signature::{Signature, Verdict};

fuzz_target!(|data: &[u8]| {
    let key = PublicKey::parse(include_bytes!("../../shared/core/vectors/ecc-test/signing-key.pub")).expect("vector key");
    let mut acl = Acl::default();
    acl.authorize(&key);
    let hash = [0x42u8; 32];
    if let Ok(sig) = Signature::parse(data) {
        // Nobody holding only public data can sign this hash.
        assert_ne!(sig.check(&acl, &hash).verdict, Verdict::Valid);
    }
});
