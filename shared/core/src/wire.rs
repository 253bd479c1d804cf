//! The primitive encodings shared by NAR and export streams (spec §1).
//!
//! * `u64le(x)`: 8 bytes little-endian;
//! * `str(b)`: `u64le(len) ‖ b ‖ 0x00 × ((8 − len mod 8) mod 8)`; readers
//!   reject non-zero padding and lengths past the caller's limit.

use std::io::{self, Read, Write};

/// Why framed data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying reader failed or ended early.
    #[error("{}", describe_io(.0))]
    Io(#[from] io::Error),
    /// A length past the limit for this field.
    #[error("{field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The claimed length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Padding bytes that are not zero.
    #[error("non-zero padding after {0}")]
    BadPadding(&'static str),
}

fn describe_io(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "truncated input: it ends in the middle of an item (was the transfer cut off? send it again)".into()
    } else {
        e.to_string()
    }
}

/// Padding after `len` bytes of data.
pub fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Read a little-endian u64.
pub fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

/// Read and check the zero padding after `len` bytes.
pub fn read_padding(r: &mut impl Read, len: u64, field: &'static str) -> Result<(), Error> {
    let mut pad = [0u8; 8];
    let n = padding(len);
    r.read_exact(&mut pad[..n])?;
    if pad[..n].iter().any(|b| *b != 0) {
        return Err(Error::BadPadding(field));
    }
    Ok(())
}

/// Read `str(b)` with `b` at most `max` bytes.
pub fn read_bytes(r: &mut impl Read, max: usize, field: &'static str) -> Result<Vec<u8>, Error> {
    let len = read_u64(r)?;
    if len > max as u64 {
        return Err(Error::TooLong {
            field,
            len,
            max: max as u64,
        });
    }
    // `len <= max` and `max` is a usize.
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    read_padding(r, len, field)?;
    Ok(buf)
}

/// Write a little-endian u64.
pub fn write_u64(w: &mut impl Write, value: u64) -> io::Result<()> {
    w.write_all(&value.to_le_bytes())
}

/// Write `str(b)`.
pub fn write_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    write_u64(w, bytes.len() as u64)?;
    w.write_all(bytes)?;
    w.write_all(&[0u8; 8][..padding(bytes.len() as u64)])
}

/// Length of `str(b)` for `len` bytes of data.
pub fn bytes_len(len: usize) -> usize {
    8 + len + padding(len as u64)
}
