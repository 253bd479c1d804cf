//! RSASSA-PKCS1-v1_5 verification with SHA-256 (spec §9), for legacy Guix
//! RSA keys. There is no RSA signing: Guix only generates RSA keys with
//! libgcrypt older than 1.6.

use num_bigint::BigUint;

/// DER DigestInfo prefix for SHA-256.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Largest modulus accepted, in bits; bounds the cost of a hostile key.
pub const MAX_MODULUS_BITS: u64 = 16384;

/// Verify `s` over the SHA-256 digest `hash` with public key (n, e), all
/// big-endian. Returns false for any malformed or wrong signature.
pub fn verify_pkcs1_sha256(n: &[u8], e: &[u8], hash: &[u8], s: &[u8]) -> bool {
    let n = BigUint::from_bytes_be(n);
    let e = BigUint::from_bytes_be(e);
    let s = BigUint::from_bytes_be(s);
    if hash.len() != 32 || n.bits() < 512 || n.bits() > MAX_MODULUS_BITS || e.bits() > 64 || s >= n
    {
        return false;
    }
    let k = usize::try_from(n.bits().div_ceil(8)).unwrap_or(usize::MAX);
    let m = s.modpow(&e, &n).to_bytes_be();
    let mut expected = vec![0xffu8; k];
    let tail = SHA256_DIGEST_INFO.len() + hash.len();
    if k < tail + 11 {
        return false;
    }
    expected[0] = 0x00;
    expected[1] = 0x01;
    expected[k - tail - 1] = 0x00;
    expected[k - tail..k - hash.len()].copy_from_slice(&SHA256_DIGEST_INFO);
    expected[k - hash.len()..].copy_from_slice(hash);
    // m lacks the leading 0x00 bytes of the encoded message.
    m.len() < k
        && expected[k - m.len()..] == m[..]
        && expected[..k - m.len()].iter().all(|b| *b == 0)
}
