//! Hexadecimal helpers: libgcrypt prints uppercase, Guix's agent protocol lowercase.

use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE, HEXUPPER};

/// Uppercase hex, as libgcrypt prints atoms and MPIs.
pub fn encode_upper(bytes: &[u8]) -> String {
    HEXUPPER.encode(bytes)
}

/// Lowercase hex, as the daemon prints hashes (`printHash`).
pub fn encode_lower(bytes: &[u8]) -> String {
    HEXLOWER.encode(bytes)
}

/// Decode hex digits of either case; `None` on odd length or a non-hex byte.
pub fn decode(digits: &[u8]) -> Option<Vec<u8>> {
    HEXLOWER_PERMISSIVE.decode(digits).ok()
}

/// Decode exactly 32 bytes of hex (a SHA-256 hash), either case.
pub fn decode_hash(digits: &str) -> Option<[u8; 32]> {
    decode(digits.as_bytes())?.try_into().ok()
}
