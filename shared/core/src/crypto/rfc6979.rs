//! RFC 6979 deterministic nonces for a 253-bit group order, as libgcrypt
//! derives them (`_gcry_dsa_gen_rfc6979_k`) with HMAC-SHA-256.
//!
//! The order n has 253 bits while blocks have 256, so `bits2int` shifts right
//! by 3. Generic routines that assume qlen = 8·rlen get a different k.

use curve25519_dalek::scalar::Scalar;
use hmac::{Hmac, KeyInit, Mac};
use num_bigint::BigUint;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

type HmacSha256 = Hmac<Sha256>;

/// Bit length of the group order n.
pub(super) const QBITS: u64 = 253;
const RLEN: usize = 32;

/// bits2int: the leftmost `QBITS` bits of `bytes` as an integer.
pub(super) fn bits2int(bytes: &[u8]) -> BigUint {
    let value = BigUint::from_bytes_be(bytes);
    let nbits = 8 * bytes.len() as u64;
    if nbits > QBITS {
        value >> (nbits - QBITS)
    } else {
        value
    }
}

fn int2octets(value: &BigUint) -> [u8; RLEN] {
    let bytes = value.to_bytes_be();
    let mut out = [0u8; RLEN];
    // Callers pass values below n < 2^253, so they fit in 32 bytes.
    out[RLEN - bytes.len()..].copy_from_slice(&bytes);
    out
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The HMAC-DRBG state that yields successive nonce candidates.
pub(super) struct NonceGen {
    k: [u8; 32],
    v: [u8; 32],
}

impl NonceGen {
    /// Steps a–f of RFC 6979 §3.2 for the secret `x` (int2octets(x): 32
    /// big-endian bytes, below `n`) and the digest `h1`.
    pub(super) fn new(xo: &[u8; RLEN], h1: &[u8], n: &BigUint) -> Self {
        let z1 = bits2int(h1);
        let z2 = if &z1 >= n { z1 - n } else { z1 };
        let ho = int2octets(&z2);
        let mut v = [0x01u8; 32];
        let mut k = [0x00u8; 32];
        k = hmac(&k, &[&v, &[0x00], xo, &ho]);
        v = hmac(&k, &[&v]);
        k = hmac(&k, &[&v, &[0x01], xo, &ho]);
        v = hmac(&k, &[&v]);
        Self { k, v }
    }

    /// Step h: the next k in [1, n−1], as a scalar (constant-time
    /// arithmetic, wiped when dropped: the nonce is as secret as the key).
    /// Call again to reject a k (r or s was 0).
    pub(super) fn next_k(&mut self) -> Scalar {
        loop {
            // One HMAC block (256 bits) already holds at least QBITS bits:
            // bits2int is V >> 3, here on bytes, little-endian for Scalar.
            self.v = hmac(&self.k, &[&self.v]);
            let le = Zeroizing::new(shr3_be_to_le(&self.v));
            // Prepare the state for the next candidate, whether or not this one is used.
            self.k = hmac(&self.k, &[&self.v, &[0x00]]);
            self.v = hmac(&self.k, &[&self.v]);
            // Canonical means below the group order n.
            let k: Option<Scalar> = Scalar::from_canonical_bytes(*le).into();
            if let Some(k) = k
                && k != Scalar::ZERO
            {
                return k;
            }
        }
    }
}

/// A 256-bit big-endian value shifted right by 3 bits (bits2int for the
/// 253-bit order), as 32 little-endian bytes.
fn shr3_be_to_le(v: &[u8; 32]) -> [u8; 32] {
    let mut be = [0u8; 32];
    be[0] = v[0] >> 3;
    for i in 1..32 {
        be[i] = (v[i - 1] << 5) | (v[i] >> 3);
    }
    be.reverse();
    be
}

impl Drop for NonceGen {
    fn drop(&mut self) {
        self.k.zeroize();
        self.v.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_shift_is_bits2int() {
        for seed in 0..64u8 {
            let v: [u8; 32] = std::array::from_fn(|i| {
                seed.wrapping_mul(37)
                    .wrapping_add((i as u8).wrapping_mul(91))
            });
            let mut le = shr3_be_to_le(&v);
            le.reverse();
            assert_eq!(BigUint::from_bytes_be(&le), bits2int(&v));
        }
    }
}
