//! narinfo text from a substitute server: the signature rule never panics,
//! and nothing but the real key's signature over the signed part is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::acl::Acl;
use offload_core::keys::PublicKey;
use offload_core::narinfo;
use offload_core::signature::Verdict;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let key = PublicKey::parse(include_bytes!("../../shared/core/vectors/ecc-test/signing-key.pub")).expect("vector key");
    let mut acl = Acl::default();
    acl.authorize(&key);
    // Nobody holding only public data can sign an arbitrary narinfo.
    assert_ne!(narinfo::verify(&text, &acl), Some(Verdict::Valid));
    let _ = narinfo::decode_signature_field(&text);
});
