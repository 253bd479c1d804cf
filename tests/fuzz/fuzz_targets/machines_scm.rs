//! machines.scm: the reader and the evaluator must never panic, whatever
//! the file holds (they run on every hook request).
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_master::machines::scheme::{eval::Evaluator, read};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(forms) = read::read_all(&text) {
        let evaluator = Evaluator::new("fuzz.scm", "/root/.ssh/id_rsa", Box::new(|_| Some("x".into())));
        let _ = evaluator.run(&forms);
    }
});
