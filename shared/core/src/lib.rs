//! The pure core of offload: formats and trust that both sides speak.
//!
//! What it is: NAR and export-stream codecs (streaming, bounded), store
//! paths and nix-base32, libgcrypt-compatible s-expressions, Guix keys,
//! ECDSA-over-edwards25519 and RSA signatures, the ACL and narinfo
//! signatures. Everything is checked against `../shared/spec/` and the
//! golden vectors in `vectors/`.
//!
//! What it is not: it opens no files or sockets, reads no clock, spawns
//! nothing and has no async runtime. Callers hand it bytes, readers and
//! writers, and randomness. The filesystem side lives in `offload-files`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod acl;
pub mod crypto;
pub mod derivation;
pub mod dnssd;
pub mod export;
pub mod hashing;
pub mod hex;
pub mod keys;
pub mod mdns_wire;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod proto;
pub mod refscan;
pub mod report;
pub mod sexp;
pub mod signature;
pub mod store_path;
pub mod wire;
