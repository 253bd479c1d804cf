//! Reading untrusted input whole, with a limit: one helper for every file
//! and stream the project reads into memory (keys, ACLs, `.drv` files,
//! machines files, stdin).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// Everything `r` yields, if that is at most `max` bytes; otherwise an
/// `InvalidData` error saying so (nothing beyond `max + 1` bytes is read).
pub fn read_at_most(r: impl Read, max: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(data)
}

/// The file at `path`, if it is at most `max` bytes.
pub fn read_file_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_at_most(fs::File::open(path)?, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_inclusive_and_more_is_an_error() {
        assert_eq!(read_at_most(&b"abcd"[..], 4).unwrap(), b"abcd");
        let err = read_at_most(&b"abcde"[..], 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("larger than 4 bytes"));
        // An endless source is not read past the limit.
        assert!(read_at_most(io::repeat(0), 1 << 20).is_err());
    }
}
