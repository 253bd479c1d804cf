//! The s-expression parser must never panic; what it accepts must survive
//! printing in both formats and parsing back, and keys and ACLs read from
//! it must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::acl::Acl;
use offload_core::keys::{PublicKey, SecretKey};
use offload_core::sexp::Sexp;

fuzz_target!(|data: &[u8]| {
    if let Ok(sexp) = Sexp::parse(data) {
        assert_eq!(Sexp::parse(&sexp.to_advanced()).as_ref(), Ok(&sexp));
        assert_eq!(Sexp::parse(&sexp.to_canonical()).as_ref(), Ok(&sexp));
    }
    let _ = PublicKey::parse(data).map(|k| k.fingerprint());
    let _ = SecretKey::parse(data).map(|k| k.sign(&[0x5a; 32]));
    let _ = Acl::parse(data).map(|acl| acl.to_advanced());
});
