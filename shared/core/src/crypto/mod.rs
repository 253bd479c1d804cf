//! The signature algorithms behind Guix keys (spec §7–§9).
//!
//! * [`ecdsa`]: ECDSA over the edwards25519 group with RFC 6979 nonces, what
//!   Guix's default `(genkey (ecdsa (curve Ed25519) (flags rfc6979)))` keys
//!   sign with. **Not** EdDSA: RFC 8032 libraries can neither verify nor
//!   create these signatures.
//! * [`ed25519`]: Ed25519 signatures made with a Guix key's secret, the
//!   transport's identity (not used for archives).
//! * [`rsa`]: RSASSA-PKCS1-v1_5 with SHA-256, for verifying legacy keys.
//!
//! Integers cross this API as big-endian byte strings, as in s-expressions.

pub mod ecdsa;
pub mod ed25519;
mod field;
mod rfc6979;
pub mod rsa;
