//! Scanning bytes for references to store items (their 32-character hash
//! parts), as the daemons do after a build and as we do for directory exports.
//!
//! The scanner keeps only the last 31 bytes between chunks, so memory does
//! not grow with the input.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};

use crate::nixbase32;
use crate::store_path::HASH_LEN;

/// Finds which of a set of hash parts occur in a byte stream.
pub struct RefScanner {
    wanted: HashSet<[u8; HASH_LEN]>,
    found: BTreeSet<[u8; HASH_LEN]>,
    tail: Vec<u8>,
}

impl RefScanner {
    /// A scanner for the given 32-character hash parts (others are ignored).
    pub fn new<'a>(hash_parts: impl IntoIterator<Item = &'a str>) -> Self {
        let wanted = hash_parts
            .into_iter()
            .filter_map(|h| h.as_bytes().try_into().ok())
            .collect();
        Self {
            wanted,
            found: BTreeSet::new(),
            tail: Vec::new(),
        }
    }

    /// Scan the next chunk of the stream.
    pub fn update(&mut self, data: &[u8]) {
        if self.wanted.is_empty() || data.is_empty() {
            return;
        }
        // `joined` = the stream's last bytes before `data`, then the start of `data`.
        let mut joined = std::mem::take(&mut self.tail);
        let old = joined.len();
        joined.extend_from_slice(&data[..data.len().min(HASH_LEN - 1)]);
        if old > 0 {
            // Windows that straddle the previous chunks and this one.
            self.scan(&joined);
        }
        self.scan(data);
        // Keep the stream's last HASH_LEN − 1 bytes for the next seam.
        if data.len() >= HASH_LEN - 1 {
            joined.clear();
            joined.extend_from_slice(&data[data.len() - (HASH_LEN - 1)..]);
        } else {
            let start = joined.len() - (HASH_LEN - 1).min(joined.len());
            joined.drain(..start);
        }
        self.tail = joined;
    }

    fn scan(&mut self, data: &[u8]) {
        let mut i = 0;
        while i + HASH_LEN <= data.len() {
            let window = &data[i..i + HASH_LEN];
            // Skip past the last byte that cannot be part of a hash.
            if let Some(bad) = window.iter().rposition(|b| !nixbase32::is_char(*b)) {
                i += bad + 1;
                continue;
            }
            if let Ok(hash) = <[u8; HASH_LEN]>::try_from(window)
                && self.wanted.contains(&hash)
            {
                self.found.insert(hash);
            }
            i += 1;
        }
    }

    /// The hash parts seen so far, sorted.
    pub fn found(&self) -> impl Iterator<Item = &str> {
        // Only wanted entries, which came from `&str`, are ever inserted.
        self.found
            .iter()
            .filter_map(|h| std::str::from_utf8(h).ok())
    }
}

impl Write for RefScanner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const B: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

    fn scan_chunks(data: &[u8], chunk: usize) -> Vec<String> {
        let mut s = RefScanner::new([A, B]);
        for c in data.chunks(chunk) {
            s.update(c);
        }
        s.found().map(str::to_owned).collect()
    }

    #[test]
    fn finds_hashes_across_chunk_boundaries() {
        let text = format!("xx /gnu/store/{A}-foo and {B}; not 0123456789abcdfghijklmnpqrsvwxy!");
        for chunk in 1..text.len() {
            assert_eq!(
                scan_chunks(text.as_bytes(), chunk),
                vec![A.to_owned(), B.to_owned()],
                "chunk {chunk}"
            );
        }
        assert!(scan_chunks(b"nothing here at all, really nothing", 7).is_empty());
    }

    #[test]
    fn finds_hash_inside_longer_base32_run() {
        let text = format!("0{A}0");
        assert_eq!(scan_chunks(text.as_bytes(), 5), vec![A.to_owned()]);
    }
}
