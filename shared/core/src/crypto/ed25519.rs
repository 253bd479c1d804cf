//! Ed25519 signatures (RFC 8032 verification equation) made with a Guix
//! key's secret, for the transport's identity (design overview §5).
//!
//! A Guix public key is the Ed25519 encoding of Q = d·G, so a signature
//! (R, S) with R = r·G and S = r + H(R‖Q‖M)·(d mod n) verifies under Q with
//! any Ed25519 verifier (OpenSSL's, ring's, dalek's). What differs from
//! RFC 8032 is only how the secret is derived: d comes from the key file as
//! it is (libgcrypt does not clamp it), and the nonce key, which RFC 8032
//! takes from the seed's hash, is derived from d here by SHA-512 under a
//! domain string of its own ([`NONCE_KEY_DOMAIN`]), so it never equals
//! anything else computed from d (the ECDSA nonces of archive signatures
//! come from RFC 6979's HMAC-SHA-256 chain).
//!
//! Signing goes through ed25519-dalek's hazmat `raw_sign`, given the true
//! public key (recomputed from d, never passed in: a wrong one would leak
//! the secret).

use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::ecdsa::SecretScalar;

/// Domain string of the nonce key's derivation.
pub const NONCE_KEY_DOMAIN: &[u8] = b"offload ed25519 nonce key v1\0";
/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// Sign `message` with the secret `d`.
pub fn sign(d: &SecretScalar, message: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut hasher = Sha512::new();
    hasher.update(NONCE_KEY_DOMAIN);
    hasher.update(&d.to_be()[..]);
    let digest = Zeroizing::new(<[u8; 64]>::from(hasher.finalize()));
    let mut hash_prefix = [0u8; 32];
    hash_prefix.copy_from_slice(&digest[..32]);
    let expanded = ExpandedSecretKey {
        scalar: *d.scalar(),
        hash_prefix,
    };
    let public = VerifyingKey::from(&expanded);
    raw_sign::<Sha512>(&expanded, message, &public).to_bytes()
}

/// Whether `signature` is a valid Ed25519 signature of `message` under the
/// encoded point `q` (strict: canonical S, no small-order keys or R).
pub fn verify(q: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = <&[u8; SIGNATURE_LEN]>::try_from(signature) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(q) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_under_the_guix_public_key() {
        let d = SecretScalar::from_random(&[7u8; 32]);
        let q = d.public_key();
        let sig = sign(&d, b"hello");
        assert!(verify(&q, b"hello", &sig));
        assert!(!verify(&q, b"hellO", &sig));
        let mut bad = sig;
        bad[5] ^= 1;
        assert!(!verify(&q, b"hello", &bad));
        assert!(!verify(&q, b"hello", &sig[..63]));
        let other = SecretScalar::from_random(&[8u8; 32]).public_key();
        assert!(!verify(&other, b"hello", &sig));
    }

    #[test]
    fn deterministic_and_message_bound() {
        let d = SecretScalar::from_random(&[9u8; 32]);
        assert_eq!(sign(&d, b"a"), sign(&d, b"a"));
        assert_ne!(sign(&d, b"a")[..32], sign(&d, b"b")[..32]);
    }
}
