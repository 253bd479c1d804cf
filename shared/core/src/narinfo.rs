//! narinfo signatures as Guix writes and checks them (spec §13).
//!
//! * The signed text (the fingerprint) is the narinfo from its first byte up
//!   to, not including, the first occurrence of `Signature:`.
//! * H = SHA-256 of that text; it must contain `StorePath`, `NarHash` and
//!   `References` fields, or the narinfo counts as unsigned.
//! * `Signature: 1;<hostname>;<BASE64>` where BASE64 encodes the UTF-8 form
//!   of the Latin-1 decoding of the signature s-expression's bytes.
//!
//! This is **not** Nix's `1;path;narHash;narSize;refs` fingerprint.

use data_encoding::BASE64;
use sha2::{Digest, Sha256};

use crate::acl::Acl;
use crate::signature::{MAX_SIGNATURE_LEN, Signature, Verdict};

/// Largest narinfo accepted.
pub const MAX_NARINFO_LEN: usize = 1 << 20;

/// The signed part of a narinfo: its text before the first `Signature:`.
pub fn fingerprint(narinfo: &str) -> &str {
    narinfo
        .find("Signature:")
        .map_or(narinfo, |i| &narinfo[..i])
}

/// Whether the signed part names the fields Guix requires.
pub fn signed_part_is_complete(signed: &str) -> bool {
    ["StorePath:", "NarHash:", "References:"]
        .iter()
        .all(|field| signed.lines().any(|l| l.starts_with(field)))
}

/// The signature bytes of a `Signature:` field value (`1;host;BASE64`).
pub fn decode_signature_field(value: &str) -> Option<Vec<u8>> {
    let mut parts = value.trim().splitn(3, ';');
    let (version, _host, b64) = (parts.next()?, parts.next()?, parts.next()?);
    if version != "1" || b64.len() > MAX_SIGNATURE_LEN * 2 {
        return None;
    }
    let utf8 = String::from_utf8(BASE64.decode(b64.as_bytes()).ok()?).ok()?;
    // Latin-1: every character must be a single byte value.
    utf8.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// The `Signature:` field value for signature bytes and a host name.
pub fn encode_signature_field(host: &str, signature: &[u8]) -> String {
    let latin1: String = signature.iter().map(|b| char::from(*b)).collect();
    format!("1;{host};{}", BASE64.encode(latin1.as_bytes()))
}

/// Check a narinfo's signature against `acl`. `None` means unsigned (no
/// field, or the signed part lacks required fields).
pub fn verify(narinfo: &str, acl: &Acl) -> Option<Verdict> {
    if narinfo.len() > MAX_NARINFO_LEN {
        return Some(Verdict::Corrupt);
    }
    let signed = fingerprint(narinfo);
    if !signed_part_is_complete(signed) {
        return None;
    }
    let field = narinfo[signed.len()..]
        .lines()
        .next()?
        .strip_prefix("Signature:")?;
    let Some(sig) = decode_signature_field(field)
        .as_deref()
        .and_then(Signature::parse)
    else {
        return Some(Verdict::Corrupt);
    };
    let hash = Sha256::digest(signed.as_bytes());
    Some(sig.check(acl, &hash).verdict)
}
