//! Recovering the affine x coordinate of an edwards25519 point.
//!
//! curve25519-dalek does not expose affine x, so we solve
//! x² = (y² − 1)/(d·y² + 1) mod p from the compressed encoding (y and the
//! sign of x), spec §8.

use std::sync::OnceLock;

use curve25519_dalek::edwards::EdwardsPoint;
use num_bigint::BigUint;
use num_traits::{One, Zero};

struct Consts {
    p: BigUint,
    d: BigUint,
    sqrt_m1: BigUint,
    sqrt_exp: BigUint,
    inv_exp: BigUint,
}

fn consts() -> &'static Consts {
    static CONSTS: OnceLock<Consts> = OnceLock::new();
    CONSTS.get_or_init(|| {
        let p = (BigUint::one() << 255u32) - BigUint::from(19u32);
        let inv_exp = &p - BigUint::from(2u32);
        // d = −121665 / 121666 mod p
        let inv = BigUint::from(121_666u32).modpow(&inv_exp, &p);
        let d = (&p - BigUint::from(121_665u32)) * inv % &p;
        let sqrt_m1 = BigUint::from(2u32).modpow(&((&p - BigUint::one()) >> 2u32), &p);
        let sqrt_exp = (&p + BigUint::from(3u32)) >> 3u32;
        Consts {
            p,
            d,
            sqrt_m1,
            sqrt_exp,
            inv_exp,
        }
    })
}

/// The sign bit of `point`'s x and the two sides of the curve equation
/// x²·v = u at its y: u = y² − 1, v = d·y² + 1 (mod p).
fn curve_at_y(point: &EdwardsPoint) -> (u8, BigUint, BigUint) {
    let c = consts();
    let mut enc = point.compress().to_bytes();
    let sign = enc[31] >> 7;
    enc[31] &= 0x7f;
    let y = BigUint::from_bytes_le(&enc);
    let y2 = &y * &y % &c.p;
    let u = (&y2 + &c.p - BigUint::one()) % &c.p;
    let v = (&c.d * &y2 + BigUint::one()) % &c.p;
    (sign, u, v)
}

/// The affine x coordinate of `point`, as a little-endian 32-byte integer below p.
pub(super) fn affine_x(point: &EdwardsPoint) -> BigUint {
    let c = consts();
    let (sign, u, v) = curve_at_y(point);
    let x2 = u * v.modpow(&c.inv_exp, &c.p) % &c.p;
    let mut x = x2.modpow(&c.sqrt_exp, &c.p);
    if &x * &x % &c.p != x2 {
        x = x * &c.sqrt_m1 % &c.p;
    }
    // A point from dalek is on the curve, so x² = x2 now holds.
    let parity = if x.bit(0) { 1 } else { 0 };
    if parity != sign && !x.is_zero() {
        x = &c.p - x;
    }
    x
}

/// Whether the affine x coordinate of `point` is congruent to `r` modulo
/// `n` (the group order), without computing a square root: x is one of
/// r, r + n, …, below p (p < 8n), and exactly one x with the point's y and
/// sign bit lies on the curve. Each candidate costs two multiplications,
/// where [`affine_x`] needs two exponentiations.
pub(super) fn affine_x_is(point: &EdwardsPoint, r: &BigUint, n: &BigUint) -> bool {
    let c = consts();
    let (sign, u, v) = curve_at_y(point);
    let mut x = r.clone();
    while x < c.p {
        let parity = u8::from(x.bit(0));
        if parity == sign && &x * &x % &c.p * &v % &c.p == u {
            return true;
        }
        x += n;
    }
    false
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::scalar::Scalar;

    use super::*;

    #[test]
    fn matching_x_agrees_with_the_square_root() {
        let n = BigUint::from_bytes_be(&super::super::ecdsa::ORDER_BE);
        let mut k = Scalar::from(7u64);
        for _ in 0..64 {
            k = k * k + Scalar::ONE;
            let point = ED25519_BASEPOINT_POINT * k;
            let x = affine_x(&point);
            let r = &x % &n;
            assert!(affine_x_is(&point, &r, &n), "x mod n");
            assert!(!affine_x_is(&point, &((&r + 1u32) % &n), &n), "x mod n + 1");
            // −x has the other sign bit: the same r must not match −P.
            let neg_r = (&c_p() - &x) % &n;
            assert!(affine_x_is(&(-point), &neg_r, &n), "-P");
            assert_eq!(affine_x_is(&(-point), &r, &n), neg_r == r, "-P with x's r");
        }
    }

    fn c_p() -> BigUint {
        consts().p.clone()
    }
}
