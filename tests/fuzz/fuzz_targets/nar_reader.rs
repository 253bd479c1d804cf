//! The NAR reader must never panic, and whatever it accepts must re-encode
//! to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::nar::{Event, Limits, NarReader, NarWriter};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_file_size: 1 << 20, max_total_size: 1 << 22, ..Limits::default() };
    let mut input = data;
    let mut reader = NarReader::new(&mut input, limits);
    let mut writer = NarWriter::new(Vec::new()).expect("writing to a Vec");
    loop {
        match reader.next_event() {
            Ok(None) => break,
            Err(_) => return,
            Ok(Some(Event::Regular { name, executable, size })) => {
                let mut contents = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match reader.contents(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => contents.extend_from_slice(&buf[..n]),
                        Err(_) => return,
                    }
                }
                writer.regular(name.as_deref(), executable, size, &mut contents.as_slice()).expect("accepted file re-encodes");
            }
            Ok(Some(Event::Symlink { name, target })) => writer.symlink(name.as_deref(), &target).expect("accepted link re-encodes"),
            Ok(Some(Event::Directory { name })) => writer.start_directory(name.as_deref()).expect("accepted dir re-encodes"),
            Ok(Some(Event::EndDirectory)) => writer.end_directory().expect("balanced"),
        }
    }
    drop(reader);
    let consumed = data.len() - input.len();
    assert_eq!(writer.finish().expect("complete NAR"), &data[..consumed]);
});
