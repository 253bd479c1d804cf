//! Nix's base-32: alphabet `0123456789abcdfghijklmnpqrsvwxyz` (no e, o, t, u),
//! least significant 5-bit group printed last (Nix `printHash32`).

/// The 32 characters, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 { 0 } else { (n * 8 - 1) / 5 + 1 }
}

/// Whether `b` is one of the 32 characters.
pub fn is_char(b: u8) -> bool {
    value(b).is_some()
}

fn value(b: u8) -> Option<u8> {
    ALPHABET.iter().position(|c| *c == b).map(|v| v as u8)
}

/// Encode bytes in Nix base-32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = if i + 1 < bytes.len() {
            u16::from(bytes[i + 1]) << (8 - j)
        } else {
            0
        };
        // The mask keeps 5 bits, so the index is below 32.
        out.push(ALPHABET[usize::from((low | high) & 0x1f)] as char);
    }
    out
}

/// Decode Nix base-32 into exactly `n` bytes; `None` for a wrong length, a
/// foreign character, or bits beyond `n` bytes.
pub fn decode(text: &[u8], n: usize) -> Option<Vec<u8>> {
    if text.len() != encoded_len(n) {
        return None;
    }
    let mut out = vec![0u8; n];
    for (pos, &c) in text.iter().rev().enumerate() {
        let digit = value(c)?;
        let b = pos * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= digit << j;
        let carry = u16::from(digit) >> (8 - j);
        if carry != 0 {
            if i + 1 >= n {
                return None;
            }
            out[i + 1] |= carry as u8;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        use sha2::{Digest, Sha256};
        let empty = Sha256::digest(b"");
        assert_eq!(
            encode(&empty),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        let nar =
            crate::hex::decode(b"ebf54a26f639afcf76bdd41c7090f76d90f5a5eeff2bce90940b84c74192807c")
                .unwrap();
        assert_eq!(
            encode(&nar),
            "0z40j90wg10bjj8cwazzxsjzb43dyy87076lpmvczbrryqk4mxgb"
        );
        assert_eq!(decode(encode(&nar).as_bytes(), 32).unwrap(), nar);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decode(b"e000000000000000000000000000000000000000000000000000", 32).is_none());
        assert!(decode(b"0mdqa9w1", 32).is_none());
        // 32 bytes take 52 digits (260 bits): the top digit holds 1 bit only.
        let top = |c: char| format!("{c}{}", "0".repeat(51));
        assert!(decode(top('z').as_bytes(), 32).is_none());
        assert!(decode(top('1').as_bytes(), 32).is_some());
        assert!(decode(top('2').as_bytes(), 32).is_none());
        // 20 bytes take exactly 32 digits: every top digit is valid.
        assert!(decode(b"z0000000000000000000000000000000", 20).is_some());
    }

    proptest::proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let text = encode(&bytes);
            proptest::prop_assert_eq!(text.len(), encoded_len(bytes.len()));
            proptest::prop_assert_eq!(decode(text.as_bytes(), bytes.len()), Some(bytes));
        }
    }
}
