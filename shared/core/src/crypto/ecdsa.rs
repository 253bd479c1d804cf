//! ECDSA over the edwards25519 group, byte-compatible with libgcrypt (spec §7).
//!
//! Domain: the Ed25519 curve −x² + y² = 1 + d·x²·y² over p = 2²⁵⁵ − 19, base
//! point G with y = 4/5, order n = 2²⁵² + 27742317777372353535851937790883648493
//! (253 bits). A public key is the 32-byte Ed25519 encoding of Q = d·G; the
//! secret is the integer d (no RFC 8032 seed expansion).
//!
//! libgcrypt generates d like an X25519 secret: 255 random bits with bit
//! 254 set and the low 3 bits clear, so d is usually **larger than n** and
//! is not reduced in the key file. Arithmetic uses d mod n, but RFC 6979
//! hashes the raw 32-byte d (`int2octets(x)` of the unreduced value), so
//! the raw value is kept for signing and printing.
//!
//! * e = the leftmost 253 bits of the hash (a right shift by 3 for SHA-256).
//! * sign: k from RFC 6979 (HMAC-SHA-256), r = x(k·G) mod n,
//!   s = k⁻¹(e + r·d) mod n; retry on r = 0 or s = 0; **no low-s rule**.
//! * verify: 0 < r, s < n; X = (e/s)·G + (r/s)·Q; valid iff X ≠ O and
//!   x(X) mod n = r.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use num_bigint::BigUint;
use zeroize::{Zeroize, Zeroizing};

use super::field::{affine_x, affine_x_is};
use super::rfc6979::{NonceGen, bits2int};

/// Length of an encoded public key (the compressed point).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of scalars (d, r, s) once left-padded.
pub const SCALAR_LEN: usize = 32;

/// The group order n, big-endian.
pub const ORDER_BE: [u8; 32] = [
    0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14, 0xde, 0xf9, 0xde, 0xa2, 0xf7, 0x9c,
    0xd6, 0x58, 0x12, 0x63, 0x1a, 0x5c, 0xf5, 0xd3, 0xed,
];

/// Why a key or signature value is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The public key bytes are not a point on the curve.
    #[error("public key is not a valid edwards25519 point")]
    BadPoint,
    /// The secret scalar is zero, at least n, or longer than 32 bytes.
    #[error("secret scalar is out of range")]
    BadSecret,
}

/// A secret d: the raw integer from the key file (below 2²⁵⁶) and d mod n,
/// which must not be zero. Zeroized on drop.
#[derive(Clone)]
pub struct SecretScalar {
    scalar: Scalar,
    raw_be: Zeroizing<[u8; 32]>,
}

impl Drop for SecretScalar {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
}

impl SecretScalar {
    /// From a big-endian integer (as in a key file) of at most 32
    /// significant bytes whose residue mod n is not zero.
    pub fn from_be(bytes: &[u8]) -> Result<Self, Error> {
        let le = Zeroizing::new(be_to_le32(bytes).ok_or(Error::BadSecret)?);
        let scalar = Scalar::from_bytes_mod_order(*le);
        if scalar == Scalar::ZERO {
            return Err(Error::BadSecret);
        }
        let mut raw_be = Zeroizing::new(*le);
        raw_be.reverse();
        Ok(Self { scalar, raw_be })
    }

    /// A new secret from 32 random bytes, shaped as libgcrypt shapes
    /// Ed25519-curve secrets: bit 254 set, bits 255 and 0–2 clear.
    pub fn from_random(bytes: &[u8; 32]) -> Self {
        let mut be = Zeroizing::new(*bytes);
        be[0] = (be[0] & 0x7f) | 0x40;
        be[31] &= 0xf8;
        // 2²⁵⁴ ≤ d < 2²⁵⁵ and 8 | d, so d is never a multiple of n (n is an
        // odd prime and 8n > 2²⁵⁵): d mod n ≠ 0 and this cannot fail.
        Self::from_be(&be[..]).expect("a clamped 255-bit secret is never 0 mod n")
    }

    /// d mod n.
    pub(crate) fn scalar(&self) -> &Scalar {
        &self.scalar
    }

    /// The raw secret as 32 big-endian bytes, as the key file holds it.
    pub fn to_be(&self) -> Zeroizing<[u8; 32]> {
        self.raw_be.clone()
    }

    /// The public key: the Ed25519 encoding of d·G.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        EdwardsPoint::mul_base(&self.scalar).compress().to_bytes()
    }

    /// Sign the digest `hash` (its leftmost 253 bits) as libgcrypt does with
    /// `(data (flags rfc6979) (hash sha256 #hash#))`. Returns (r, s) as
    /// minimal big-endian integers.
    pub fn sign(&self, hash: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let n = BigUint::from_bytes_be(&ORDER_BE);
        let e = big_to_scalar(&(bits2int(hash) % &n));
        let mut nonces = NonceGen::new(&self.raw_be, hash, &n);
        loop {
            let k = nonces.next_k();
            let point = EdwardsPoint::mul_base(&k);
            let r = big_to_scalar(&(affine_x(&point) % &n));
            if r == Scalar::ZERO {
                continue;
            }
            let mut k_inv = k.invert();
            let s = k_inv * (e + r * self.scalar);
            k_inv.zeroize();
            let mut k = k;
            k.zeroize();
            if s == Scalar::ZERO {
                continue;
            }
            return (scalar_to_min_be(&r), scalar_to_min_be(&s));
        }
    }
}

/// Verify (r, s) over `hash` against the encoded public key `q`.
///
/// `r` and `s` are big-endian integers of any length (left-padded); only the
/// leftmost 253 bits of `hash` are covered, so callers must also compare the
/// hash itself (spec §6 step 2).
pub fn verify(q: &[u8; PUBLIC_KEY_LEN], hash: &[u8], r: &[u8], s: &[u8]) -> Result<bool, Error> {
    let point = CompressedEdwardsY(*q).decompress().ok_or(Error::BadPoint)?;
    let (Some(r), Some(s)) = (canonical_nonzero(r), canonical_nonzero(s)) else {
        return Ok(false);
    };
    let n = BigUint::from_bytes_be(&ORDER_BE);
    let e = big_to_scalar(&(bits2int(hash) % &n));
    let w = s.invert();
    // (r/s)·Q + (e/s)·G
    let x = EdwardsPoint::vartime_double_scalar_mul_basepoint(&(r * w), &point, &(e * w));
    if x.is_identity() {
        return Ok(false);
    }
    Ok(affine_x_is(&x, &BigUint::from_bytes_le(r.as_bytes()), &n))
}

fn canonical_nonzero(be: &[u8]) -> Option<Scalar> {
    let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(be_to_le32(be)?))?;
    (scalar != Scalar::ZERO).then_some(scalar)
}

/// Left-pad a big-endian integer to 32 bytes and reverse it; `None` if it
/// needs more than 32 bytes (leading zero bytes are allowed).
fn be_to_le32(be: &[u8]) -> Option<[u8; 32]> {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    if digits.len() > 32 {
        return None;
    }
    let mut le = [0u8; 32];
    for (i, b) in digits.iter().rev().enumerate() {
        le[i] = *b;
    }
    Some(le)
}

/// A value already reduced below n as a scalar.
fn big_to_scalar(value: &BigUint) -> Scalar {
    let mut le = [0u8; 32];
    let bytes = value.to_bytes_le();
    le[..bytes.len()].copy_from_slice(&bytes);
    Scalar::from_bytes_mod_order(le)
}

/// Minimal big-endian bytes, as libgcrypt prints r and s (no 0x00 sign byte).
fn scalar_to_min_be(s: &Scalar) -> Vec<u8> {
    let mut be = s.to_bytes();
    be.reverse();
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len() - 1);
    be[start..].to_vec()
}
