//! Nix machines files: parsing never panics, and what parses prints back
//! to a file that parses to the same machines.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use offload_master::machines::nix_file;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut no_includes = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
    if let Ok(machines) = nix_file::parse(&text, Path::new("machines"), &mut no_includes) {
        let printed = nix_file::print(&machines);
        let again = nix_file::parse(&printed, Path::new("machines"), &mut no_includes).expect("printed file parses");
        assert_eq!(again, machines);
    }
});
