//! The export-stream reader and the signature check must never panic on
//! any input, whatever the ACL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::acl::Acl;
use offload_core::export::{self, ExportReader, Limits};
use offload_core::keys::PublicKey;

fuzz_target!(|data: &[u8]| {
    let mut acl = Acl::default();
    let key = PublicKey::parse(include_bytes!("../../shared/core/vectors/ecc-test/signing-key.pub")).expect("vector key");
    acl.authorize(&key);
    let mut limits = Limits::default();
    limits.nar.max_total_size = 1 << 22;
    let mut reader = ExportReader::new(data, limits);
    while let Ok(Some(mut item)) = reader.next_item() {
        loop {
            match item.nar().next_event() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match item.finish() {
            Ok(trailer) => {
                let _ = export::check_item(&trailer, &acl);
            }
            Err(_) => return,
        }
    }
});
